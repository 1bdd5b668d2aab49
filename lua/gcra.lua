-- GCRA, mirroring service/src/algorithm/gcra.rs.
-- keys[1]  string: theoretical arrival time (TAT), microseconds
-- p1, p2   emission_interval_us, burst
algorithms.gcra = function(keys, now, cost, interval, burst)
  local key = keys[1]
  local tolerance = interval * burst
  local stored = tonumber(redis.call('GET', key) or '0')
  local tat = math.max(stored, now)
  local new_tat = tat + interval * cost
  local horizon = now + tolerance
  local allowed = new_tat <= horizon
  local retry = 0
  if not allowed then
    if cost > burst then retry = -1 else retry = new_tat - horizon end
  end
  if allowed then stored = new_tat end
  local tat_after = math.max(stored, now)
  local remaining = math.floor(math.max(horizon - tat_after, 0) / interval)
  local reset = tat_after - now
  local function write(commit)
    if commit then redis.call('SET', key, num(new_tat), 'PX', ttl_ms(reset)) end
  end
  return {allowed and 1 or 0, remaining, reset, retry}, write
end
