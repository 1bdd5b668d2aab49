// Envoy's rate limit service (RLS v3) through k6's gRPC client: any server of
// envoy.service.ratelimit.v3.RateLimitService, Sluice or another. Run: k6 run k6/rls.js
// (variables: k6/README.md). Each request names DOMAIN and the DESCRIPTORS template, with the
// iteration's key in place of {key}:
//   TARGETS=127.0.0.1:50051 DOMAIN=edge DESCRIPTORS='route=checkout,user={key}' k6 run k6/rls.js
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
const domain = env('DOMAIN', '');
const template = parseDescriptors(env('DESCRIPTORS', ''));
if (domain === '') {
  throw new Error('DOMAIN="": give the domain of the server\'s rate limit configuration');
}

export const options = {
  scenarios: { rls: scenario() },
  thresholds: thresholds('grpc_req_duration', config),
  summaryTrendStats,
};

const client = new grpc.Client();
// Paths are relative to this script: the project's wire-compatible copy of Envoy's protos.
client.load(['../proto'], 'envoy/service/ratelimit/v3/rls.proto');

/** `key=value,key2=value2` descriptors separated by spaces or semicolons. */
function parseDescriptors(text) {
  const fix = "use key=value,key2={key} descriptors separated by ';', e.g. route=checkout,user={key}";
  const descriptors = text
    .split(/[;\s]+/)
    .filter((descriptor) => descriptor !== '')
    .map((descriptor) =>
      descriptor.split(',').map((entry) => {
        const at = entry.indexOf('=');
        if (at <= 0) throw new Error(`DESCRIPTORS=${JSON.stringify(text)}: ${fix}`);
        return { key: entry.slice(0, at), value: entry.slice(at + 1) };
      }),
    );
  if (descriptors.length === 0) throw new Error(`DESCRIPTORS=${JSON.stringify(text)}: ${fix}`);
  return descriptors;
}

const pick = keyPicker(config.distribution, config.keys);
let connected = false;

export default function () {
  if (!connected) {
    const target = config.targets[(__VU - 1) % config.targets.length];
    client.connect(target, { plaintext: true, timeout: '5s' });
    connected = true;
  }
  const key = `${config.keyPrefix}${pick()}`;
  const request = {
    domain,
    descriptors: template.map((entries) => ({
      entries: entries.map((entry) => ({ key: entry.key, value: entry.value.split('{key}').join(key) })),
    })),
  };
  if (config.cost !== 1) request.hits_addend = config.cost;
  const response = client.invoke('envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit', request, {
    tags: { name: 'should_rate_limit' },
  });
  const message = response && response.message;
  const code = message && message.overallCode;
  const fine = check(response, {
    'status is OK': (r) => r && r.status === grpc.StatusOK,
    'an overall code and one status per descriptor': () =>
      (code === 'OK' || code === 'OVER_LIMIT') &&
      message.statuses.length === template.length &&
      countDecision(code === 'OK' ? 'allowed' : 'denied'),
  });
  unexpected.add(!fine);
}

export function handleSummary(data) {
  return summaryFiles(data, 'rls', 'grpc_req_duration', config);
}
