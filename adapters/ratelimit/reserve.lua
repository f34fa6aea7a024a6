-- Check, and only when every check passes, reserve each demand of the batch in turn (atomic).
-- The payload is [plans, demands]. A plan (policies.limits.Plan, shared by the demands of one key and
--   route): [buckets [[key, limit, window_s, takes_tokens]], slots [[key, limit]], spends [[key, period,
--   limit_nano (-1: alert only)]]]; a demand (policies.limits.Demand): [id, ttl_s, tokens, cost_nano, plan]
--   (plan: 0-based). A bucket takes the demand's tokens or one request, a spend reserves its cost.
-- Answers one JSON text (decoded in C by the caller, not field by field as a nested reply would be):
-- per demand [ok, kind, index, retry_s, [[remaining, reset_s]...], [period_id...], [ends_in_s...],
--             spent_nano, reserved_nano], as policies.limits.Verdict.
--
-- Each counter is read once per batch, kept in a Lua table while the batch's demands are decided one
-- after another, and written once at the end. The script is atomic, so nothing can observe the state in
-- between: the decisions are exactly those of writing after every demand, for a fraction of the Redis
-- calls (the demands of a batch mostly share their counters: the same key, team and route). What does
-- not change within a batch (key names, periods, their JSON) is worked out once per plan.
local payload = cjson.decode(ARGV[2])
local plans, demands = payload[1], payload[2]
local out = {}

local prepared = {}
for p, plan in ipairs(plans) do
  local bkeys, ckeys, skeys, rkeys, pids, ends, pj, ej = {}, {}, {}, {}, {}, {}, {}, {}
  for j, b in ipairs(plan[1]) do bkeys[j] = prefix .. 'b|' .. b[1] end
  for j, s in ipairs(plan[2]) do ckeys[j] = prefix .. 'c|' .. s[1] end
  for j, s in ipairs(plan[3]) do
    local pid, pend = period(s[2])
    pids[j], ends[j] = pid, pend
    skeys[j], rkeys[j] = prefix .. 's|' .. s[1] .. '|' .. pid, prefix .. 'r|' .. s[1] .. '|' .. pid
    pj[j], ej[j] = cjson.encode(pid), secs(pend - now)
  end
  prepared[p] = {plan[1], plan[2], plan[3], bkeys, ckeys, skeys, rkeys, ends,
                 '[' .. table.concat(pj, ',') .. '],[' .. table.concat(ej, ',') .. '],'}
end

local bucket_state, bucket_order = {}, {}   -- key -> {level, limit, window, written}
local slot_state, slot_order = {}, {}       -- key -> {count, cleaned, adds {score, id, ...}, ttl_ms}
local spend_state, spend_order = {}, {}     -- skey -> {s, r, rkey, adds {score, member, ...}, added, keep}

local function bucket(key, limit, window)
  local b = bucket_state[key]
  if not b then
    b = {level(key, limit, window), limit, window, false}
    bucket_state[key] = b
    bucket_order[#bucket_order + 1] = key
  end
  return b
end

local function slot(key)
  local s = slot_state[key]
  if not s then
    s = {redis.call('ZCARD', key), false, {}, 0}
    slot_state[key] = s
    slot_order[#slot_order + 1] = key
  end
  return s
end

-- drop the spend reservations of requests never settled (a crashed replica's), once per batch
local function spend(skey, rkey)
  local sp = spend_state[skey]
  if not sp then
    local gone = redis.call('ZRANGEBYSCORE', rkey, '-inf', now)
    local dropped = 0
    if #gone > 0 then
      for _, member in ipairs(gone) do dropped = dropped + tonumber(string.match(member, ':(%d+)$')) end
      redis.call('ZREMRANGEBYSCORE', rkey, '-inf', now)
      redis.call('HINCRBY', skey, 'r', int(-dropped))
    end
    local v = redis.call('HMGET', skey, 's', 'r')
    sp = {tonumber(v[1] or 0), tonumber(v[2] or 0), rkey, {}, 0, 0}
    spend_state[skey] = sp
    spend_order[#spend_order + 1] = skey
  end
  return sp
end

local OK = '[true,"",-1,' .. secs(0) .. ',['
for i, d in ipairs(demands) do
  local id, ttl, tokens, cost = d[1], d[2], d[3], d[4]
  local P = prepared[d[5] + 1]
  local buckets, slots, spends, bkeys = P[1], P[2], P[3], P[4]
  local kind, index, retry, spent, reserved = '', -1, 0, 0, 0
  local states, costs = {}, {}
  for j, b in ipairs(buckets) do
    local st = bucket(bkeys[j], b[2], b[3])
    states[j] = st
    costs[j] = b[4] and tokens or 1
    if kind == '' and st[1] < costs[j] then
      kind, index, retry = 'bucket', j - 1, (costs[j] - st[1]) * b[3] / b[2]
    end
  end
  if kind == '' then
    for j, s in ipairs(slots) do
      local key = P[5][j]
      local st = slot(key)
      if st[1] >= s[2] and not st[2] then  -- full: first drop the slots whose holders never came back
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
        st[1], st[2] = redis.call('ZCARD', key) + #st[3] / 2, true  -- + this batch's, not written yet
      end
      if st[1] >= s[2] then
        kind, index, retry = 'slot', j - 1, 1
        break
      end
    end
  end
  if kind == '' then
    for j, s in ipairs(spends) do
      if s[3] >= 0 then
        local sp = spend(P[6][j], P[7][j])
        if sp[1] + sp[2] + cost > s[3] then
          kind, index, spent, reserved = 'spend', j - 1, sp[1], sp[2]
          if sp[1] + cost > s[3] then retry = P[8][j] - now else retry = 1 end
          break
        end
      end
    end
  end
  if kind == '' then
    for j, st in ipairs(states) do
      st[1], st[4] = st[1] - costs[j], true
    end
    local expires = tostring(now + ttl)
    for j = 1, #slots do
      local st = slot(P[5][j])
      st[1] = st[1] + 1
      local adds = st[3]
      adds[#adds + 1] = expires
      adds[#adds + 1] = id
      if ms(ttl) > st[4] then st[4] = ms(ttl) end
    end
    if cost > 0 then
      local member = id .. ':' .. int(cost)
      for j = 1, #spends do
        local sp = spend(P[6][j], P[7][j])
        sp[2] = sp[2] + cost
        local adds = sp[4]
        adds[#adds + 1] = expires
        adds[#adds + 1] = member
        sp[5] = sp[5] + cost
        sp[6] = P[8][j]
      end
    end
  end
  local levels = {}
  for j, b in ipairs(buckets) do
    local l = states[j][1]
    local reset = (b[2] - l) * b[3] / b[2]
    if reset < 0 then reset = 0 end
    levels[j] = '[' .. int(math.floor(l)) .. ',' .. secs(reset) .. ']'
  end
  local head = OK
  if kind ~= '' then head = '[false,"' .. kind .. '",' .. int(index) .. ',' .. secs(retry) .. ',[' end
  out[i] = head .. table.concat(levels, ',') .. '],' .. P[9] .. int(spent) .. ',' .. int(reserved) .. ']'
end

-- the batch's writes, one per counter
for _, key in ipairs(bucket_order) do
  local b = bucket_state[key]
  if b[4] then write_level(key, b[1], b[2], b[3]) end
end
for _, key in ipairs(slot_order) do
  local st = slot_state[key]
  if #st[3] > 0 then
    redis.call('ZADD', key, unpack(st[3]))
    redis.call('PEXPIRE', key, int(st[4] + 1000))
  end
end
for _, skey in ipairs(spend_order) do
  local sp = spend_state[skey]
  if sp[5] > 0 then
    redis.call('ZADD', sp[3], unpack(sp[4]))
    if tonumber(redis.call('HINCRBY', skey, 'r', int(sp[5]))) == sp[5] then
      local keep = keep_spend(sp[6])  -- nothing was reserved before: maybe new keys, give them their end
      redis.call('EXPIRE', skey, keep)
      redis.call('EXPIRE', sp[3], keep)
    end
  end
end
return '[' .. table.concat(out, ',') .. ']'
