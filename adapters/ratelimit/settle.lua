-- Settle each request of the batch: buckets corrected to the metered amount, slots released,
-- spend reservations released and the metered cost added; budget alerts fire once per period.
-- A settlement: [id, buckets [[key, limit, window_s, delta]], slots [key], spends [[key, period_id,
--                reserved_nano, actual_nano, alerts [[alert_id, threshold_nano]]]]]
-- Answers per settlement: [alert_id, spent_nano]* for each alert crossed for the first time.
local items = cjson.decode(ARGV[2])
local out = {}
for i, s in ipairs(items) do
  local id = s[1]
  for _, b in ipairs(s[2]) do
    if b[4] ~= 0 then
      local key = prefix .. 'b|' .. b[1]
      local l = level(key, b[2], b[3]) - b[4]
      if l > b[2] then l = b[2] end
      write_level(key, l, b[2], b[3])
    end
  end
  for _, key in ipairs(s[3]) do redis.call('ZREM', prefix .. 'c|' .. key, id) end
  local fired = {}
  for _, p in ipairs(s[4]) do
    local skey = prefix .. 's|' .. p[1] .. '|' .. p[2]
    if p[3] > 0 and redis.call('ZREM', prefix .. 'r|' .. p[1] .. '|' .. p[2], id .. ':' .. int(p[3])) == 1 then
      redis.call('HINCRBY', skey, 'r', int(-p[3]))
    end
    local spent = tonumber(redis.call('HINCRBY', skey, 's', int(p[4])))
    local keep = keep_spend(period_end(p[2]))
    redis.call('EXPIRE', skey, keep)
    if #p[5] > 0 then
      local akey = prefix .. 'a|' .. p[1] .. '|' .. p[2]
      for _, a in ipairs(p[5]) do
        if spent >= a[2] and redis.call('SADD', akey, a[1]) == 1 then
          fired[#fired + 1] = a[1]
          fired[#fired + 1] = spent
        end
      end
      redis.call('EXPIRE', akey, keep)
    end
  end
  out[i] = fired
end
return out
