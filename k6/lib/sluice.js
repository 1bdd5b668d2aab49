// What k6/http.js and k6/grpc.js share: settings from environment variables, the scenario
// they pick, key selection, the outcome counters and the end-of-test summary files.
// Every variable is listed in k6/README.md.

import { Counter, Rate } from 'k6/metrics';

/** A variable, or its default. An empty value counts as unset. */
export function env(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

function fail(name, value, fix) {
  throw new Error(`${name}=${JSON.stringify(value)}: ${fix}`);
}

/** A positive number from the environment, or a clear error naming the variable. */
export function positive(name, fallback) {
  const raw = env(name, String(fallback));
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) fail(name, raw, 'use a number above 0');
  return value;
}

/** A whole number from 1 up. */
export function count(name, fallback) {
  const value = positive(name, fallback);
  if (!Number.isInteger(value)) fail(name, env(name, fallback), 'use a whole number');
  return value;
}

/** k6 durations: "30s", "2m", "500ms". */
function duration(name, fallback) {
  const value = env(name, fallback);
  if (!/^\d+(ms|s|m|h)$/.test(value)) fail(name, value, 'use a duration such as 500ms, 30s or 2m');
  return value;
}

/** Every setting, read once in the init context. */
export function settings(defaultTargets) {
  const keys = count('KEYS', 1000);
  const cost = count('COST', 1);
  const resource = env('RESOURCE', '');
  const targets = env('TARGETS', defaultTargets)
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
  if (targets.length === 0) fail('TARGETS', env('TARGETS', ''), 'name at least one address');
  return {
    targets,
    keys,
    cost,
    resource,
    keyPrefix: env('KEY_PREFIX', 'k6-'),
    distribution: parseDistribution(env('DISTRIBUTION', 'uniform')),
    p99Ms: positive('P99_MS', 250),
    maxUnexpected: Number(env('MAX_UNEXPECTED', '0')),
    resultsDir: env('RESULTS_DIR', 'results/k6'),
    name: env('NAME', ''),
  };
}

/**
 * The load model, from SCENARIO:
 *   constant-arrival-rate (default): RATE iterations/s for DURATION (open model);
 *   ramping-arrival-rate: STAGES "10s:100,20s:500" (ramp to each rate over each time);
 *   constant-vus: VUS looping virtual users for DURATION (closed model).
 * Arrival-rate scenarios start PRE_VUS users and add up to MAX_VUS when the service slows.
 */
export function scenario() {
  const kind = env('SCENARIO', 'constant-arrival-rate');
  const preAllocatedVUs = count('PRE_VUS', 20);
  const maxVUs = count('MAX_VUS', 200);
  switch (kind) {
    case 'constant-arrival-rate':
      return {
        executor: kind,
        rate: count('RATE', 100),
        timeUnit: '1s',
        duration: duration('DURATION', '30s'),
        preAllocatedVUs,
        maxVUs,
      };
    case 'ramping-arrival-rate': {
      const text = env('STAGES', '10s:100,20s:500');
      const stages = text.split(',').map((stage) => {
        const [time, target] = stage.split(':');
        if (!/^\d+(ms|s|m|h)$/.test(time || '') || !(Number(target) >= 0)) {
          fail('STAGES', text, 'use DURATION:RATE stages, e.g. 10s:100,20s:500');
        }
        return { duration: time, target: Number(target) };
      });
      return {
        executor: kind,
        startRate: Number(env('START_RATE', '0')),
        timeUnit: '1s',
        stages,
        preAllocatedVUs,
        maxVUs,
      };
    }
    case 'constant-vus':
      return { executor: kind, vus: count('VUS', 10), duration: duration('DURATION', '30s') };
    default:
      return fail(
        'SCENARIO',
        kind,
        'use constant-arrival-rate, ramping-arrival-rate or constant-vus',
      );
  }
}

/** The same key distributions as loadgen: uniform, zipf[:S], hot[:SHARE]. */
export function parseDistribution(text) {
  const [name, value] = text.split(':');
  const fix = 'use uniform, zipf[:EXPONENT] (e.g. zipf:1.1) or hot[:SHARE] (e.g. hot:0.9)';
  if (name === 'uniform' && value === undefined) return { kind: 'uniform' };
  if (name === 'zipf') {
    const exponent = value === undefined ? 1 : Number(value);
    if (!(exponent > 0) || !Number.isFinite(exponent)) fail('DISTRIBUTION', text, fix);
    return { kind: 'zipf', exponent };
  }
  if (name === 'hot') {
    const share = value === undefined ? 0.9 : Number(value);
    if (!(share >= 0 && share <= 1)) fail('DISTRIBUTION', text, fix);
    return { kind: 'hot', share };
  }
  return fail('DISTRIBUTION', text, fix);
}

/**
 * Picks key indexes: uniform, zipf (key i with weight 1/(i+1)^s, by binary search over the
 * cumulative weights, built once per VU) or hot (key 0 takes SHARE, the rest uniform).
 */
export function keyPicker(distribution, keys, random = Math.random) {
  if (distribution.kind === 'zipf') {
    const cumulative = new Float64Array(keys);
    let total = 0;
    for (let i = 0; i < keys; i++) {
      total += 1 / Math.pow(i + 1, distribution.exponent);
      cumulative[i] = total;
    }
    return () => {
      const target = random() * total;
      let low = 0;
      let high = keys - 1;
      while (low < high) {
        const mid = (low + high) >> 1;
        if (cumulative[mid] < target) low = mid + 1;
        else high = mid;
      }
      return low;
    };
  }
  if (distribution.kind === 'hot') {
    return () =>
      keys === 1 || random() < distribution.share ? 0 : 1 + Math.floor(random() * (keys - 1));
  }
  return () => Math.floor(random() * keys);
}

// Outcomes. A denial is an expected answer of a rate limiter, counted apart from failures;
// "unexpected" is anything else: errors, wrong status codes, missing headers or fields.
export const allowed = new Counter('sluice_allowed');
export const denied = new Counter('sluice_denied');
export const banned = new Counter('sluice_banned');
// Let through by a rule in shadow mode that would have denied them.
export const shadowDenied = new Counter('sluice_shadow_denied');
export const unexpected = new Rate('sluice_unexpected');

/** Counts a decision ("allowed", "denied", "banned", "shadow_denied"); false if unknown. */
export function countDecision(decision) {
  switch (decision) {
    case 'allowed':
      allowed.add(1);
      return true;
    case 'shadow_denied':
      shadowDenied.add(1);
      return true;
    case 'denied':
      denied.add(1);
      return true;
    case 'banned':
      banned.add(1);
      return true;
    default:
      return false;
  }
}

/** Thresholds: p99 of the request duration metric, and the share of unexpected results. */
export function thresholds(durationMetric, config) {
  return {
    [durationMetric]: [`p(99)<${config.p99Ms}`],
    sluice_unexpected: [`rate<=${config.maxUnexpected}`],
  };
}

export const summaryTrendStats = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'];

function metricValue(data, name, field) {
  const metric = data.metrics[name];
  return metric && metric.values[field] !== undefined ? metric.values[field] : 0;
}

function fixed(value, digits) {
  return Number(value).toFixed(digits);
}

/** The end-of-test files: a JSON and a text summary in RESULTS_DIR, the text on stdout too. */
export function summaryFiles(data, script, durationMetric, config) {
  const name = config.name || script;
  const seconds = data.state.testRunDurationMs / 1000;
  const lines = [`k6 ${script}: ${config.targets.join(', ')} for ${fixed(seconds, 1)} s`];
  const counted = ['sluice_allowed', 'sluice_denied', 'sluice_banned', 'sluice_shadow_denied'].map(
    (metric) => metricValue(data, metric, 'count'),
  );
  const total = counted.reduce((a, b) => a + b, 0);
  lines.push(
    `  decisions: ${total} (${fixed(total / seconds, 1)}/s): allowed ${counted[0]}, ` +
      `denied ${counted[1]}, banned ${counted[2]}, shadow-denied ${counted[3]}`,
  );
  lines.push(
    `  unexpected: ${fixed(100 * metricValue(data, 'sluice_unexpected', 'rate'), 2)}% ` +
      `of ${metricValue(data, 'sluice_unexpected', 'passes') + metricValue(data, 'sluice_unexpected', 'fails')}`,
  );
  lines.push(
    `  dropped iterations: ${metricValue(data, 'dropped_iterations', 'count')} ` +
      '(sends the arrival rate wanted but no VU was free for)',
  );
  const latency = ['avg', 'med', 'p(90)', 'p(95)', 'p(99)', 'max']
    .map((stat) => `${stat} ${fixed(metricValue(data, durationMetric, stat), 2)}`)
    .join(', ');
  lines.push(`  ${durationMetric} (ms): ${latency}`);
  lines.push('  thresholds:');
  for (const [metric, body] of Object.entries(data.metrics)) {
    for (const [expression, result] of Object.entries(body.thresholds || {})) {
      lines.push(`    ${result.ok ? 'ok  ' : 'FAIL'} ${metric} ${expression}`);
    }
  }
  const text = lines.join('\n') + '\n';
  return {
    stdout: text,
    [`${config.resultsDir}/${name}-summary.json`]: JSON.stringify(data, null, 2),
    [`${config.resultsDir}/${name}-summary.txt`]: text,
  };
}
