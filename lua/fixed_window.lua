-- Fixed window, mirroring service/src/algorithm/fixed_window.rs.
-- fields   start_us, count
-- p1, p2   limit, window_us
FIELDS.fw = {'start_us', 'count'}
algorithms.fw = function(stored, new, o, now, cost, limit, window)
  local kept_start, kept_count = tonumber(stored[o + 1] or '0'), tonumber(stored[o + 2] or '0')
  local start, count = kept_start, kept_count
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
  new[o + 1], new[o + 2] = changed(start, kept_start), changed(count, kept_count)
  return allowed and 1 or 0, limit - count, reset, retry, false
end
