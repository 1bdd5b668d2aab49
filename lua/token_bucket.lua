-- Token bucket, mirroring service/src/algorithm/token_bucket.rs operation for operation.
-- fields   tokens, last_refill_us
-- p1, p2   capacity, refill_per_us (shortest round-trip decimal of the Rust f64)
FIELDS.tb = {'tokens', 'last_refill_us'}
algorithms.tb = function(stored, o, now, cost, capacity, rate)
  local EPSILON = 1e-9
  local tokens, last = capacity, now
  if stored[o + 1] then
    tokens = tonumber(stored[o + 1])
    last = tonumber(stored[o + 2])
  end
  local elapsed = now - last
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(capacity, tokens + elapsed * rate)
  if now > last then last = now end
  local allowed = cost <= tokens + EPSILON
  if allowed then tokens = math.max(tokens - cost, 0) end

  -- Fewest whole microseconds until tokens reach target, by the very test a check applies.
  local function micros_to_gain(target)
    local function reached(us) return tokens + us * rate + EPSILON >= target end
    if reached(0) then return 0 end
    local us = math.ceil((target - tokens) / rate)
    for _ = 1, 64 do
      if reached(us) then break end
      us = us + 1
    end
    for _ = 1, 64 do
      if us == 0 or not reached(us - 1) then break end
      us = us - 1
    end
    return us
  end

  local retry = 0
  if not allowed then
    if cost > capacity then retry = -1 else retry = micros_to_gain(cost) end
  end
  local reset = micros_to_gain(capacity)
  -- Written on denials too: the refilled state is what the next check must start from.
  return {allowed and 1 or 0, math.floor(tokens), reset, retry}, {num(tokens), num(last)}, true
end
