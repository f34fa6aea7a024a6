-- Shared by reserve.lua and settle.lua (prepended to each): Redis's clock, periods, formatting.
-- ARGV[1] is the key prefix (it carries the key layout's version), ARGV[2] the JSON payload.
local prefix = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

-- integers as digits: Redis would write a large Lua number as 1e+15, which HINCRBY refuses
local function int(n) return string.format('%d', n) end
local function ms(s) return math.ceil(s * 1000) end
local function secs(s) return string.format('%.3f', math.ceil(s * 1000) / 1000) end

-- Howard Hinnant's civil calendar algorithms (as policies/limits.py period_bounds)
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function month_end(y, m)
  if m == 12 then return days_from_civil(y + 1, 1, 1) * 86400 end
  return days_from_civil(y, m + 1, 1) * 86400
end

-- the UTC period holding now: its id and its end (epoch seconds)
local function period(kind)
  local day = math.floor(now / 86400)
  if kind == 'daily' then return 'd' .. int(day), (day + 1) * 86400 end
  if kind == 'weekly' then
    local monday = day - (day + 3) % 7
    return 'w' .. int(monday), (monday + 7) * 86400
  end
  local y, m = civil(day)
  return string.format('m%04d%02d', y, m), month_end(y, m)
end

local function period_end(pid)
  local kind, v = string.sub(pid, 1, 1), string.sub(pid, 2)
  if kind == 'd' then return (tonumber(v) + 1) * 86400 end
  if kind == 'w' then return (tonumber(v) + 7) * 86400 end
  return month_end(tonumber(string.sub(v, 1, 4)), tonumber(string.sub(v, 5, 6)))
end

-- a token bucket is one string, "<level> <written at>": its level now is full when absent, else
-- refilled at limit per window since it was written
local function level(key, limit, window)
  local v = redis.call('GET', key)
  if not v then return limit end
  local l, at = string.match(v, '^(%S+) (%S+)$')
  local elapsed = now - tonumber(at)
  if elapsed < 0 then elapsed = 0 end  -- written this very microsecond (or a clock step back): no refill
  l = tonumber(l) + elapsed * limit / window
  if l > limit then return limit end
  return l
end

local function write_level(key, l, limit, window)
  local full_in = (limit - l) * window / limit
  if full_in < 0 then full_in = 0 end
  -- expires once full again: a full bucket is an absent one
  redis.call('SET', key, string.format('%.17g %.6f', l, now), 'PX', int(ms(full_in) + 1000))
end

-- spend keys outlive their period by a day, for late settlements
local function keep_spend(pend)
  local s = math.ceil(pend - now) + 86400
  if s < 1 then s = 1 end
  return int(s)
end
