-- Check, and only when every check passes, reserve each demand of the batch in turn (atomic).
-- A demand (policies.limits.Demand): [id, ttl_s, tokens, cost_nano, buckets [[key, limit, window_s, takes_tokens]],
--   slots [[key, limit]], spends [[key, period, limit_nano (-1: alert only)]]]; a bucket takes the demand's
--   tokens or one request, a spend reserves its cost.
-- Answers one JSON text (decoded in C by the caller, not field by field as a nested reply would be):
-- per demand [ok, kind, index, retry_s, [[remaining, reset_s]...], [period_id...], [ends_in_s...],
--             spent_nano, reserved_nano], as policies.limits.Verdict.
local demands = cjson.decode(ARGV[2])
local out = {}

-- drop the spend reservations of requests never settled (a crashed replica's)
local function expire_reservations(skey, rkey)
  local gone = redis.call('ZRANGEBYSCORE', rkey, '-inf', now)
  if #gone > 0 then
    local total = 0
    for _, member in ipairs(gone) do total = total + tonumber(string.match(member, ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', rkey, '-inf', now)
    redis.call('HINCRBY', skey, 'r', int(-total))
  end
end

for i, d in ipairs(demands) do
  local id, ttl, tokens, cost, buckets, slots, spends = d[1], d[2], d[3], d[4], d[5], d[6], d[7]
  local kind, index, retry, spent, reserved = '', -1, 0, 0, 0
  local levels, costs = {}, {}
  for j, b in ipairs(buckets) do
    levels[j] = level(prefix .. 'b|' .. b[1], b[2], b[3])
    costs[j] = b[4] and tokens or 1
    if kind == '' and levels[j] < costs[j] then
      kind, index, retry = 'bucket', j - 1, (costs[j] - levels[j]) * b[3] / b[2]
    end
  end
  if kind == '' then
    for j, s in ipairs(slots) do
      local key = prefix .. 'c|' .. s[1]
      if redis.call('ZCARD', key) >= s[2] then  -- full: first drop the slots whose holders never came back
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
        if redis.call('ZCARD', key) >= s[2] then
          kind, index, retry = 'slot', j - 1, 1
          break
        end
      end
    end
  end
  local pids, ends, expired = {}, {}, {}
  for j, s in ipairs(spends) do
    local pid, pend = period(s[2])
    pids[j], ends[j] = pid, pend
    if kind == '' and s[3] >= 0 then
      local skey = prefix .. 's|' .. s[1] .. '|' .. pid
      expire_reservations(skey, prefix .. 'r|' .. s[1] .. '|' .. pid)
      expired[j] = true
      local v = redis.call('HMGET', skey, 's', 'r')
      local sp, rs = tonumber(v[1] or 0), tonumber(v[2] or 0)
      if sp + rs + cost > s[3] then
        kind, index, spent, reserved = 'spend', j - 1, sp, rs
        if sp + cost > s[3] then retry = pend - now else retry = 1 end
      end
    end
  end
  if kind == '' then
    for j, b in ipairs(buckets) do
      levels[j] = levels[j] - costs[j]
      write_level(prefix .. 'b|' .. b[1], levels[j], b[2], b[3])
    end
    for _, s in ipairs(slots) do
      local key = prefix .. 'c|' .. s[1]
      redis.call('ZADD', key, tostring(now + ttl), id)
      redis.call('PEXPIRE', key, int(ms(ttl) + 1000))
    end
    if cost > 0 then
      for j, s in ipairs(spends) do
        local skey = prefix .. 's|' .. s[1] .. '|' .. pids[j]
        local rkey = prefix .. 'r|' .. s[1] .. '|' .. pids[j]
        if not expired[j] then expire_reservations(skey, rkey) end  -- alert-only spends were not checked
        redis.call('ZADD', rkey, tostring(now + ttl), id .. ':' .. int(cost))
        if tonumber(redis.call('HINCRBY', skey, 'r', int(cost))) == cost then
          local keep = keep_spend(ends[j])  -- nothing was reserved before: maybe new keys, give them their end
          redis.call('EXPIRE', skey, keep)
          redis.call('EXPIRE', rkey, keep)
        end
      end
    end
  end
  local levels_json, pids_json, ends_json = {}, {}, {}
  for j, b in ipairs(buckets) do
    local reset = (b[2] - levels[j]) * b[3] / b[2]
    if reset < 0 then reset = 0 end
    levels_json[j] = '[' .. int(math.floor(levels[j])) .. ',' .. secs(reset) .. ']'
  end
  for j = 1, #pids do
    pids_json[j] = cjson.encode(pids[j])
    ends_json[j] = secs(ends[j] - now)
  end
  out[i] = '[' .. (kind == '' and 'true' or 'false') .. ',"' .. kind .. '",' .. int(index) .. ',' .. secs(retry)
    .. ',[' .. table.concat(levels_json, ',') .. '],[' .. table.concat(pids_json, ',') .. '],['
    .. table.concat(ends_json, ',') .. '],' .. int(spent) .. ',' .. int(reserved) .. ']'
end
return '[' .. table.concat(out, ',') .. ']'
