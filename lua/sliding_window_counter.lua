-- Sliding window counter, mirroring service/src/algorithm/sliding_window_counter.rs.
-- Weights are integers in whole milliseconds; configuration keeps limit x window_ms below 2^51,
-- so every product here is an exact double.
-- state    start_us, current, previous
-- p1, p2   limit, window_ms
STATE.swc = '<ddd'
algorithms.swc = function(kept, now, cost, limit, w)
  local window_us = w * 1000
  local start, current, previous = 0, 0, 0
  if kept then start, current, previous = struct.unpack(STATE.swc, kept) end
  local this_window = now - math.fmod(now, window_us)
  if this_window > start then
    if this_window - start == window_us then previous = current else previous = 0 end
    current = 0
    start = this_window
  end
  local elapsed_ms = math.min(math.floor(math.max(now - start, 0) / 1000), w - 1)
  local budget = limit * w
  local previous_weight = w - elapsed_ms
  local allowed = previous * previous_weight + current * w + cost * w <= budget
  if allowed then current = current + cost end
  local used = previous * previous_weight + current * w
  local remaining = math.floor(math.max(budget - used, 0) / w)

  local reset = 0
  if current > 0 then
    reset = math.max(start + 2 * window_us - now, 0)
  elseif previous > 0 then
    reset = math.max(start + window_us - now, 0)
  end

  local retry = 0
  if not allowed then
    if cost > limit then
      retry = -1
    else
      local function first_fitting_ms(weight, base)
        local room = limit - (base + cost)
        if room < 0 then return nil end
        if weight == 0 then return 0 end
        return math.max(w - math.floor(room * w / weight), 0)
      end
      local at
      local ms = first_fitting_ms(previous, current)
      if ms and ms < w then
        at = start + ms * 1000
      else
        at = start + window_us + (first_fitting_ms(current, 0) or w) * 1000
      end
      retry = math.max(at - now, 0)
    end
  end
  -- Written on denials too, so a rolled window is what the next check starts from.
  local state = struct.pack(STATE.swc, start, current, previous)
  return allowed and 1 or 0, remaining, reset, retry, state, true
end
