-- Settle each request of the batch: tokens buckets corrected to the metered amount, slots released,
-- spend reservations released and the metered cost added; budget alerts fire once per period.
-- The payload is [plans, items]. A plan (shared by the settlements of one key and route): [buckets
--   [[key, limit, window_s]], slots [key], spends [[key, alerts [[alert_id, threshold_nano]]]]]; an item
--   (policies.limits.Settlement): [id, delta_tokens, plan (0-based), reserved_nano, actual_nano,
--   periods [period_id]] (the periods align with the plan's spends).
-- Answers one JSON text: per settlement [[alert_id, spent_nano]...], the alerts crossed for the first time.
--
-- As in reserve.lua, each counter is read once, changed in a Lua table item by item, and written once.
local payload = cjson.decode(ARGV[2])
local plans, items = payload[1], payload[2]
local out = {}

local prepared = {}
for p, plan in ipairs(plans) do
  local bkeys, ckeys = {}, {}
  for j, b in ipairs(plan[1]) do bkeys[j] = prefix .. 'b|' .. b[1] end
  for j, key in ipairs(plan[2]) do ckeys[j] = prefix .. 'c|' .. key end
  prepared[p] = {plan[1], plan[3], bkeys, ckeys}
end

local bucket_state, bucket_order = {}, {}   -- key -> {level, limit, window}
local released, released_order = {}, {}     -- slot key -> {id, ...}
local spend_state, spend_order = {}, {}     -- skey -> {spent, added, pid, rkey}
local held, held_order = {}, {}             -- rkey -> {skey, members {}, amounts {}, seen {}}
local alerted = {}                          -- akey .. '\n' .. alert id -> true: added in this batch

local function spend(skey, pid)
  local sp = spend_state[skey]
  if not sp then
    sp = {tonumber(redis.call('HGET', skey, 's') or 0), 0, pid}
    spend_state[skey] = sp
    spend_order[#spend_order + 1] = skey
  end
  return sp
end

for i, s in ipairs(items) do
  local id, delta, reserved, actual, periods = s[1], s[2], s[4], s[5], s[6]
  local P = prepared[s[3] + 1]
  if delta ~= 0 then
    for j, b in ipairs(P[1]) do
      local key = P[3][j]
      local st = bucket_state[key]
      if not st then
        st = {level(key, b[2], b[3]), b[2], b[3]}
        bucket_state[key] = st
        bucket_order[#bucket_order + 1] = key
      end
      local l = st[1] - delta
      if l > st[2] then l = st[2] end
      st[1] = l
    end
  end
  for _, ckey in ipairs(P[4]) do
    local ids = released[ckey]
    if not ids then
      ids = {}
      released[ckey] = ids
      released_order[#released_order + 1] = ckey
    end
    ids[#ids + 1] = id
  end
  local fired = {}
  for j, p in ipairs(P[2]) do
    local pid = periods[j]
    local skey = prefix .. 's|' .. p[1] .. '|' .. pid
    if reserved > 0 then
      local rkey = prefix .. 'r|' .. p[1] .. '|' .. pid
      local h = held[rkey]
      if not h then
        h = {skey, {}, {}, {}}
        held[rkey] = h
        held_order[#held_order + 1] = rkey
      end
      local member = id .. ':' .. int(reserved)
      if not h[4][member] then  -- a request settled twice releases its reservation once
        h[4][member] = true
        h[2][#h[2] + 1] = member
        h[3][#h[3] + 1] = reserved
      end
    end
    local sp = spend(skey, pid)
    sp[1], sp[2] = sp[1] + actual, sp[2] + actual
    local spent = sp[1]
    if #p[2] > 0 then
      local akey = prefix .. 'a|' .. p[1] .. '|' .. pid
      for _, a in ipairs(p[2]) do
        local mark = akey .. '\n' .. a[1]
        if spent >= a[2] and not alerted[mark] then
          alerted[mark] = true
          if redis.call('SADD', akey, a[1]) == 1 then
            fired[#fired + 1] = '[' .. cjson.encode(a[1]) .. ',' .. int(spent) .. ']'
            redis.call('EXPIRE', akey, keep_spend(period_end(pid)))
          end
        end
      end
    end
  end
  out[i] = '[' .. table.concat(fired, ',') .. ']'
end

-- the batch's writes, one per counter
for _, key in ipairs(bucket_order) do
  local st = bucket_state[key]
  write_level(key, st[1], st[2], st[3])
end
for _, ckey in ipairs(released_order) do
  redis.call('ZREM', ckey, unpack(released[ckey]))
end
-- a reservation is released (and its amount taken off) only if it is still there: an expired one was
-- subtracted when a reserve dropped it
for _, rkey in ipairs(held_order) do
  local h = held[rkey]
  local scores = redis.call('ZMSCORE', rkey, unpack(h[2]))
  local total = 0
  for k, score in ipairs(scores) do
    if score then total = total + h[3][k] end
  end
  if total > 0 then
    redis.call('ZREM', rkey, unpack(h[2]))
    redis.call('HINCRBY', h[1], 'r', int(-total))
  end
end
for _, skey in ipairs(spend_order) do
  local sp = spend_state[skey]
  if sp[2] ~= 0 or sp[1] == 0 then
    local spent = tonumber(redis.call('HINCRBY', skey, 's', int(sp[2])))
    if spent == sp[2] then redis.call('EXPIRE', skey, keep_spend(period_end(sp[3]))) end  -- the period's first
  end
end
return '[' .. table.concat(out, ',') .. ']'
