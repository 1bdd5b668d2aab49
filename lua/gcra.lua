-- GCRA, mirroring service/src/algorithm/gcra.rs.
-- state    tat: theoretical arrival time, microseconds
-- p1, p2   emission_interval_us, burst
STATE.gcra = '<d'
algorithms.gcra = function(kept_state, now, cost, interval, burst)
  local tolerance = interval * burst
  local kept = 0
  if kept_state then kept = struct.unpack(STATE.gcra, kept_state) end
  local tat = math.max(kept, now)
  local new_tat = tat + interval * cost
  local horizon = now + tolerance
  local allowed = new_tat <= horizon
  local retry = 0
  if not allowed then
    if cost > burst then retry = -1 else retry = new_tat - horizon end
  end
  if allowed then kept = new_tat end
  local tat_after = math.max(kept, now)
  local remaining = math.floor(math.max(horizon - tat_after, 0) / interval)
  local reset = tat_after - now
  local state = struct.pack(STATE.gcra, new_tat)
  return allowed and 1 or 0, remaining, reset, retry, state, false
end
