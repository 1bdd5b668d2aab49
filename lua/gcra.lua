-- GCRA, mirroring service/src/algorithm/gcra.rs.
-- fields   tat: theoretical arrival time, microseconds
-- p1, p2   emission_interval_us, burst
FIELDS.gcra = {'tat'}
algorithms.gcra = function(stored, new, o, now, cost, interval, burst)
  local tolerance = interval * burst
  local kept = tonumber(stored[o + 1] or '0')
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
  new[o + 1] = new_tat
  return allowed and 1 or 0, remaining, reset, retry, false
end
