// gRPC load on Sluice's sluice.v1.RateLimiter/Check. Run: k6 run k6/grpc.js (variables:
// k6/README.md). The client loads the project's .proto; REFLECT=1 asks the server instead.
//   TARGETS=127.0.0.1:50051,127.0.0.1:50052 RATE=500 DURATION=20s k6 run k6/grpc.js
import grpc from 'k6/net/grpc';
import { check } from 'k6';

import {
  countDecision,
  env,
  keyPicker,
  scenario,
  settings,
  summaryFiles,
  summaryTrendStats,
  thresholds,
  unexpected,
} from './lib/sluice.js';

const config = settings('127.0.0.1:50051');
const reflect = env('REFLECT', '0') === '1';

export const options = {
  scenarios: { check: scenario() },
  thresholds: thresholds('grpc_req_duration', config),
  summaryTrendStats,
};

const client = new grpc.Client();
if (!reflect) {
  // Paths are relative to this script: the repository's proto/ folder.
  client.load(['../proto'], 'sluice/v1/ratelimiter.proto');
}

const pick = keyPicker(config.distribution, config.keys);
const DECISIONS = {
  DECISION_ALLOWED: 'allowed',
  DECISION_DENIED: 'denied',
  DECISION_BANNED: 'banned',
  DECISION_SHADOW_DENIED: 'shadow_denied',
};
let connected = false;

export default function () {
  if (!connected) {
    // One connection per VU, opened on its first iteration (connect is not allowed in init).
    const target = config.targets[(__VU - 1) % config.targets.length];
    client.connect(target, { plaintext: true, reflect, timeout: '5s' });
    connected = true;
  }
  const request = { key: `${config.keyPrefix}${pick()}`, resource: config.resource };
  if (config.cost !== 1) request.cost = config.cost;
  const response = client.invoke('sluice.v1.RateLimiter/Check', request, {
    tags: { name: 'check' },
  });
  const message = response && response.message;
  const fine = check(response, {
    'status is OK': (r) => r && r.status === grpc.StatusOK,
    'a decision with limit and remaining': () =>
      message !== null &&
      message !== undefined &&
      countDecision(DECISIONS[message.decision]) &&
      message.limit !== undefined,
  });
  unexpected.add(!fine);
}

export function handleSummary(data) {
  return summaryFiles(data, 'grpc', 'grpc_req_duration', config);
}
