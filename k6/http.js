// HTTP load on Sluice's POST /check. Run: k6 run k6/http.js (variables: k6/README.md).
//   TARGETS=http://127.0.0.1:8080,http://127.0.0.1:8081 RATE=500 DURATION=20s k6 run k6/http.js
import http from 'k6/http';
import { check } from 'k6';

import {
  countDecision,
  keyPicker,
  scenario,
  settings,
  summaryFiles,
  summaryTrendStats,
  thresholds,
  unexpected,
} from './lib/sluice.js';

const config = settings('http://127.0.0.1:8080');

export const options = {
  scenarios: { check: scenario() },
  thresholds: thresholds('http_req_duration', config),
  summaryTrendStats,
  // A 429 is the limiter doing its job, not a failed request.
  discardResponseBodies: false,
};

http.setResponseCallback(http.expectedStatuses(200, 403, 429));

const pick = keyPicker(config.distribution, config.keys);
const query = [
  config.resource ? `resource=${encodeURIComponent(config.resource)}` : '',
  config.cost !== 1 ? `cost=${config.cost}` : '',
]
  .filter((part) => part)
  .join('&');
const urls = config.targets.map((target) => `${target.replace(/\/$/, '')}/check${query ? `?${query}` : ''}`);

export default function () {
  const key = `${config.keyPrefix}${pick()}`;
  // Spread requests over the targets as loadgen does: each iteration the next one.
  const url = urls[(__VU + __ITER) % urls.length];
  const response = http.post(url, null, { headers: { 'X-API-Key': key }, tags: { name: 'check' } });
  let body = null;
  try {
    body = response.json();
  } catch (_) {
    body = null;
  }
  // 429: denied; 403: the key is banned. Both are the limiter working, and both say when to retry.
  const limited = response.status === 429 || response.status === 403;
  const fine = check(response, {
    'status is 200, 429 or 403': (r) => r.status === 200 || limited,
    'RateLimit-Policy and RateLimit headers': (r) =>
      Boolean(r.headers['Ratelimit-Policy']) && Boolean(r.headers['Ratelimit']),
    'Retry-After on 429 and 403': (r) => !limited || Boolean(r.headers['Retry-After']),
    'a decision in the body': () => body !== null && countDecision(body.decision),
  });
  unexpected.add(!fine);
}

export function handleSummary(data) {
  return summaryFiles(data, 'http', 'http_req_duration', config);
}
