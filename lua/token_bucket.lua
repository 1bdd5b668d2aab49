-- Token bucket, mirroring service/src/algorithm/token_bucket.rs operation for operation.
-- keys[1]  hash {tokens, last_refill_us}
-- p1, p2   capacity, refill_per_us (shortest round-trip decimal of the Rust f64)
algorithms.tb = function(keys, now, cost, capacity, rate)
  local key = keys[1]
  local EPSILON = 1e-9
  local stored = redis.call('HMGET', key, 'tokens', 'last_refill_us')
  local tokens, last = capacity, now
  if stored[1] then
    tokens = tonumber(stored[1])
    last = tonumber(stored[2])
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
  local function write()
    redis.call('HSET', key, 'tokens', num(tokens), 'last_refill_us', num(last))
    redis.call('PEXPIRE', key, ttl_ms(reset))
  end
  return {allowed and 1 or 0, math.floor(tokens), reset, retry}, write
end
