-- Fixed window, mirroring service/src/algorithm/fixed_window.rs.
-- state    start_us, count
-- p1, p2   limit, window_us
STATE.fw = '<dd'
algorithms.fw = function(kept, now, cost, limit, window)
  local start, count = 0, 0
  if kept then start, count = struct.unpack(STATE.fw, kept) end
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
  local state = struct.pack(STATE.fw, start, count)
  return allowed and 1 or 0, limit - count, reset, retry, state, false
end
