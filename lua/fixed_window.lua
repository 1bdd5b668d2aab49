-- Fixed window, mirroring service/src/algorithm/fixed_window.rs.
-- keys[1]  hash {start_us, count}
-- p1, p2   limit, window_us
algorithms.fw = function(keys, now, cost, limit, window)
  local key = keys[1]
  local stored = redis.call('HMGET', key, 'start_us', 'count')
  local start, count = tonumber(stored[1] or '0'), tonumber(stored[2] or '0')
  -- fmod is exact on doubles; `%` (a - floor(a/b)*b) can be off near window boundaries.
  local current = now - math.fmod(now, window)
  if current > start then
    start, count = current, 0
  end
  local until_end = math.max(start + window - now, 0)
  local allowed = cost <= limit - math.min(count, limit)
  if allowed then count = count + cost end
  local retry = 0
  if not allowed then
    if cost > limit then retry = -1 else retry = until_end end
  end
  local reset = 0
  if count > 0 then reset = until_end end
  local function write(commit)
    if commit then
      redis.call('HSET', key, 'start_us', num(start), 'count', num(count))
      redis.call('PEXPIRE', key, ttl_ms(until_end))
    end
  end
  return {allowed and 1 or 0, limit - count, reset, retry}, write
end
