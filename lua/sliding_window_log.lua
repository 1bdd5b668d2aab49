-- Sliding window log, mirroring service/src/algorithm/sliding_window_log.rs.
-- Not in the state hash: the log must expire with its sum, so both keep keys of their own.
-- keys[1]  sorted set: member "<time_us>:<cost>" scored by time (one member per microsecond)
-- keys[2]  string: the sum of the logged costs
-- p1, p2   limit, window_us
KEY_COUNT.swl = 2
algorithms.swl = function(keys, now, cost, limit, window)
  local log, total_key = keys[1], keys[2]
  local function cost_of(member) return tonumber(string.match(member, ':(%d+)$')) end

  local total = tonumber(redis.call('GET', total_key) or '0')
  -- An entry logged at t leaves the window once now >= t + window.
  local cutoff = now - window
  local expired = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  for _, member in ipairs(expired) do total = total - cost_of(member) end
  local allowed = cost <= limit - total

  local retry = 0
  if not allowed then
    if cost > limit then
      retry = -1
    else
      local left = total
      local entries = redis.call('ZRANGE', log, #expired, -1, 'WITHSCORES')
      for i = 1, #entries, 2 do
        left = left - cost_of(entries[i])
        if left + cost <= limit then
          retry = math.max(tonumber(entries[i + 1]) + window - now, 0)
          break
        end
      end
    end
  end

  local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  local newest_at = nil
  if #newest > 0 and tonumber(newest[2]) > now - window then newest_at = tonumber(newest[2]) end
  -- Where this request is logged, and with what cost (same-microsecond entries merge).
  local at, merged, replaced = now, cost, nil
  if allowed and cost > 0 then
    total = total + cost
    if newest_at and newest_at >= now then
      at = newest_at
      merged = merged + cost_of(newest[1])
      replaced = newest[1]
    end
    newest_at = at
  end
  local function write(commit)
    if not commit then return end
    if #expired > 0 then redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff) end
    if replaced then redis.call('ZREM', log, replaced) end
    redis.call('ZADD', log, at, num(at) .. ':' .. num(merged))
    local ttl = ttl_ms(at + window - now)
    redis.call('SET', total_key, total, 'PX', ttl)
    redis.call('PEXPIRE', log, ttl)
  end
  local reset = 0
  if newest_at then reset = math.max(newest_at + window - now, 0) end
  return allowed and 1 or 0, limit - total, reset, retry, write
end
