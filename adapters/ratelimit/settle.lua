-- Settle each request of the batch: tokens buckets corrected to the metered amount, slots released,
-- spend reservations released and the metered cost added; budget alerts fire once per period.
-- A settlement (policies.limits.Settlement): [id, delta_tokens, buckets [[key, limit, window_s]], slots [key],
--   reserved_nano, actual_nano, spends [[key, alerts [[alert_id, threshold_nano]]]], periods [period_id]]
-- Answers one JSON text: per settlement [[alert_id, spent_nano]...], the alerts crossed for the first time.
local items = cjson.decode(ARGV[2])
local out = {}
for i, s in ipairs(items) do
  local id, delta, reserved, actual, periods = s[1], s[2], s[5], s[6], s[8]
  if delta ~= 0 then
    for _, b in ipairs(s[3]) do
      local key = prefix .. 'b|' .. b[1]
      local l = level(key, b[2], b[3]) - delta
      if l > b[2] then l = b[2] end
      write_level(key, l, b[2], b[3])
    end
  end
  for _, key in ipairs(s[4]) do redis.call('ZREM', prefix .. 'c|' .. key, id) end
  local fired = {}
  for j, p in ipairs(s[7]) do
    local pid = periods[j]
    local skey = prefix .. 's|' .. p[1] .. '|' .. pid
    if reserved > 0 and redis.call('ZREM', prefix .. 'r|' .. p[1] .. '|' .. pid, id .. ':' .. int(reserved)) == 1 then
      redis.call('HINCRBY', skey, 'r', int(-reserved))
    end
    local spent = tonumber(redis.call('HINCRBY', skey, 's', int(actual)))
    if spent == actual then redis.call('EXPIRE', skey, keep_spend(period_end(pid))) end  -- the period's first
    if #p[2] > 0 then
      local akey = prefix .. 'a|' .. p[1] .. '|' .. pid
      for _, a in ipairs(p[2]) do
        if spent >= a[2] and redis.call('SADD', akey, a[1]) == 1 then
          fired[#fired + 1] = '[' .. cjson.encode(a[1]) .. ',' .. int(spent) .. ']'
          redis.call('EXPIRE', akey, keep_spend(period_end(pid)))
        end
      end
    end
  end
  out[i] = '[' .. table.concat(fired, ',') .. ']'
end
return '[' .. table.concat(out, ',') .. ']'
