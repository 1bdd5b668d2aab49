-- Token bucket, mirroring service/src/algorithm/token_bucket.rs operation for operation.
-- state    tokens, last_refill_us
-- p1, p2   capacity, refill_per_us (shortest round-trip decimal of the Rust f64)
STATE.tb = '<dd'
local TB_EPSILON = 1e-9

-- Fewest whole microseconds until tokens reach target, by the very test a check applies
-- (tokens + us * rate + epsilon >= target). A function of its own, not a closure per call.
local function tb_micros_to_gain(tokens, rate, target)
  if tokens + TB_EPSILON >= target then return 0 end
  local us = math.ceil((target - tokens) / rate)
  for _ = 1, 64 do
    if tokens + us * rate + TB_EPSILON >= target then break end
    us = us + 1
  end
  for _ = 1, 64 do
    if us == 0 or tokens + (us - 1) * rate + TB_EPSILON < target then break end
    us = us - 1
  end
  return us
end

algorithms.tb = function(kept, now, cost, capacity, rate)
  local tokens, last = capacity, now
  if kept then tokens, last = struct.unpack(STATE.tb, kept) end
  local elapsed = now - last
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(capacity, tokens + elapsed * rate)
  if now > last then last = now end
  local allowed = cost <= tokens + TB_EPSILON
  if allowed then tokens = math.max(tokens - cost, 0) end

  local retry = 0
  if not allowed then
    if cost > capacity then retry = -1 else retry = tb_micros_to_gain(tokens, rate, cost) end
  end
  local reset = tb_micros_to_gain(tokens, rate, capacity)
  -- Written on denials too: the refilled state is what the next check must start from.
  local state = struct.pack(STATE.tb, tokens, last)
  return allowed and 1 or 0, math.floor(tokens), reset, retry, state, true
end
