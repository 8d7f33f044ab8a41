import { inspect } from 'node:util';
import { ConfigError } from '@plugline/contracts';
import { createLogger } from '@plugline/telemetry';
import { describe, expect, it } from 'vitest';

import {
  envBoolean,
  envInteger,
  envNatsAuth,
  envNatsUrls,
  envTraceExport,
  parseNodeConfig,
  parseServiceBaseConfig,
  Secret,
} from '../src/index.js';

const base = { NATS_URL: 'nats://127.0.0.1:4333, 127.0.0.1:4334', KUBECONFIG: '/k' };

function fieldOf(read: () => unknown): string | undefined {
  try {
    read();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).field;
  }
  return undefined;
}

describe('parseServiceBaseConfig', () => {
  it('reads the common variables with their defaults', () => {
    expect(parseServiceBaseConfig({ ...base, HEALTH_HOST: ' 0.0.0.0 ' })).toEqual({
      natsUrls: ['nats://127.0.0.1:4333', '127.0.0.1:4334'],
      kubeconfig: '/k',
      logLevel: 'info',
      logPretty: false,
      healthPort: 0,
      healthHost: '0.0.0.0',
      concurrency: 32,
      streamReplicas: 1,
      ackWaitMs: 30_000,
      leaseTtlMs: 30_000,
      instance: undefined,
      traces: undefined,
    });
  });

  it('reads the lease TTL and the instance a restarted process keeps', () => {
    const config = parseServiceBaseConfig({
      ...base,
      PLUGLINE_LEASE_TTL_MS: '3000',
      PLUGLINE_INSTANCE: 'node-mounter.node-1',
    });
    expect(config).toMatchObject({ leaseTtlMs: 3000, instance: 'node-mounter.node-1' });
  });

  it.each([
    ['NATS_URL', { NATS_URL: ' , ' }],
    ['NATS_URL', { NATS_URL: 'http://x:1' }],
    ['NATS_URL', { NATS_URL: 'nats:///x' }],
    ['KUBECONFIG', { KUBECONFIG: '' }],
    ['LOG_LEVEL', { LOG_LEVEL: 'loud' }],
    ['LOG_PRETTY', { LOG_PRETTY: 'yes' }],
    ['HEALTH_PORT', { HEALTH_PORT: '65536' }],
    ['PLUGLINE_CONCURRENCY', { PLUGLINE_CONCURRENCY: '0' }],
    ['PLUGLINE_STREAM_REPLICAS', { PLUGLINE_STREAM_REPLICAS: '1e0' }],
    ['PLUGLINE_ACK_WAIT_MS', { PLUGLINE_ACK_WAIT_MS: '3600001' }],
    ['PLUGLINE_LEASE_TTL_MS', { PLUGLINE_LEASE_TTL_MS: '499' }],
    ['PLUGLINE_INSTANCE', { PLUGLINE_INSTANCE: 'node-mounter@node-1' }],
    ['PLUGLINE_INSTANCE', { PLUGLINE_INSTANCE: 'Spec-Watcher' }],
  ])('fails fast naming %s', (field, overrides) => {
    expect(fieldOf(() => parseServiceBaseConfig({ ...base, ...overrides }))).toBe(field);
  });
});

describe("envTraceExport (OpenTelemetry's standard variables)", () => {
  it('exports nothing unless an OTLP endpoint or exporter is asked for', () => {
    expect(envTraceExport({})).toBeUndefined();
    expect(envTraceExport({ OTEL_SERVICE_NAME: 'x', OTEL_BSP_SCHEDULE_DELAY: '100' })).toBe(
      undefined,
    );
  });

  it('appends /v1/traces to the base endpoint and takes the traces endpoint as it is', () => {
    expect(envTraceExport({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toEqual({
      tracesUrl: 'http://collector:4318/v1/traces',
      serviceName: undefined,
      exportDelayMs: 5000,
    });
    expect(
      envTraceExport({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://otel.example/base/' })?.tracesUrl,
    ).toBe('https://otel.example/base/v1/traces');
    expect(
      envTraceExport({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://ignored:4318',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://tempo:4318/otlp/v1/traces',
        OTEL_SERVICE_NAME: 'hotplug-spec-watcher',
        OTEL_BSP_SCHEDULE_DELAY: '250',
      }),
    ).toEqual({
      tracesUrl: 'http://tempo:4318/otlp/v1/traces',
      serviceName: 'hotplug-spec-watcher',
      exportDelayMs: 250,
    });
    expect(envTraceExport({ OTEL_TRACES_EXPORTER: 'otlp' })?.tracesUrl).toBe(
      'http://localhost:4318/v1/traces',
    );
  });

  it('is turned off by OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true', () => {
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' };
    expect(envTraceExport({ ...endpoint, OTEL_TRACES_EXPORTER: 'none' })).toBeUndefined();
    expect(envTraceExport({ ...endpoint, OTEL_SDK_DISABLED: 'true' })).toBeUndefined();
    expect(parseServiceBaseConfig({ ...base, ...endpoint }).traces?.tracesUrl).toBe(
      'http://collector:4318/v1/traces',
    );
  });

  it.each([
    ['OTEL_EXPORTER_OTLP_ENDPOINT', { OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }],
    ['OTEL_EXPORTER_OTLP_ENDPOINT', { OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://collector:4317' }],
    ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'not a url' }],
    ['OTEL_TRACES_EXPORTER', { OTEL_TRACES_EXPORTER: 'jaeger' }],
    ['OTEL_EXPORTER_OTLP_PROTOCOL', { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }],
    ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/protobuf' }],
    ['OTEL_BSP_SCHEDULE_DELAY', { OTEL_BSP_SCHEDULE_DELAY: '0' }],
    ['OTEL_SDK_DISABLED', { OTEL_SDK_DISABLED: 'maybe' }],
  ])('fails fast naming %s', (field, env) => {
    expect(fieldOf(() => envTraceExport({ OTEL_TRACES_EXPORTER: 'otlp', ...env }))).toBe(field);
  });

  it('never echoes credentials in an endpoint', () => {
    const read = (): unknown =>
      envTraceExport({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://user:s3cret@collector:4318' });
    expect(read).toThrow(/OTEL_EXPORTER_OTLP_HEADERS/);
    expect(read).not.toThrow(/s3cret/);
  });
});

describe('env readers', () => {
  it('take only decimal digits within the bounds', () => {
    expect(envInteger({ N: ' 42 ' }, 'N', 1, 0, 100)).toBe(42);
    expect(envInteger({}, 'N', 7, 0, 100)).toBe(7);
    for (const raw of ['-1', '0x10', '1.5', '101', '9007199254740993'])
      expect(fieldOf(() => envInteger({ N: raw }, 'N', 1, 0, 100))).toBe('N');
  });

  it('take true/1 and false/0 as booleans', () => {
    expect(envBoolean({ B: 'TRUE' }, 'B', false)).toBe(true);
    expect(envBoolean({ B: '0' }, 'B', true)).toBe(false);
    expect(envBoolean({ B: ' ' }, 'B', true)).toBe(true);
    expect(fieldOf(() => envBoolean({ B: 'on' }, 'B', false))).toBe('B');
  });

  it('take NATS URLs and host:port pairs', () => {
    expect(envNatsUrls({ NATS_URL: 'tls://a.b:4222,wss://h/p,h-1.x:4222' })).toEqual([
      'tls://a.b:4222',
      'wss://h/p',
      'h-1.x:4222',
    ]);
  });
});

describe('NATS credentials', () => {
  const PASSWORD = 's3cr3t-pa55word';

  it('reads NATS_USER + NATS_PASSWORD, NATS_TOKEN or NATS_CREDS, or none', () => {
    const user = envNatsAuth({ NATS_USER: 'spec-watcher', NATS_PASSWORD: PASSWORD });
    expect(user).toMatchObject({ kind: 'user', user: 'spec-watcher' });
    expect(user?.kind === 'user' && user.password.reveal()).toBe(PASSWORD);
    const token = envNatsAuth({ NATS_TOKEN: 't0ken' });
    expect(token?.kind === 'token' && token.token.reveal()).toBe('t0ken');
    expect(envNatsAuth({ NATS_CREDS: '/etc/nats/sw.creds' })).toEqual({
      kind: 'creds',
      credsFile: '/etc/nats/sw.creds',
    });
    expect(envNatsAuth({ NATS_USER: ' ', NATS_PASSWORD: '' })).toBeUndefined();
    expect(parseServiceBaseConfig(base).natsAuth).toBeUndefined();
  });

  it.each([
    ['NATS_PASSWORD', { NATS_USER: 'spec-watcher' }],
    ['NATS_USER', { NATS_PASSWORD: PASSWORD }],
    ['NATS_TOKEN', { NATS_USER: 'u', NATS_PASSWORD: PASSWORD, NATS_TOKEN: 't' }],
    ['NATS_CREDS', { NATS_TOKEN: 't', NATS_CREDS: '/c.creds' }],
    ['NATS_CREDS', { NATS_CREDS: 'relative.creds' }],
    ['NATS_URL', { NATS_URL: `nats://spec-watcher:${PASSWORD}@127.0.0.1:4222` }],
    ['NATS_URL', { NATS_URL: `nats://127.0.0.1:4222,u:${PASSWORD}@h:4222` }],
  ])('fails fast naming %s, without echoing the password', (field, overrides) => {
    let message = '';
    expect(
      fieldOf(() => {
        try {
          parseServiceBaseConfig({ ...base, ...overrides });
        } catch (err) {
          message = (err as Error).message;
          throw err;
        }
      }),
    ).toBe(field);
    expect(message).not.toContain(PASSWORD);
  });

  it('never shows the password or token in the logged, printed or inspected config', () => {
    for (const env of [
      { NATS_USER: 'spec-watcher', NATS_PASSWORD: PASSWORD },
      { NATS_TOKEN: PASSWORD },
    ]) {
      const config = parseServiceBaseConfig({ ...base, ...env });
      let logged = '';
      const logger = createLogger({ level: 'info' }, { write: (line: string) => (logged += line) });
      logger.info({ config, natsAuth: config.natsAuth }, 'config');
      expect(logged).toContain('[redacted]');
      expect(logged).not.toContain(PASSWORD);
      expect(JSON.stringify(config)).not.toContain(PASSWORD);
      expect(inspect(config, { depth: 10 })).not.toContain(PASSWORD);
      expect(`${String(Object.values(config.natsAuth ?? {}))}`).not.toContain(PASSWORD);
    }
    expect(new Secret(PASSWORD).reveal()).toBe(PASSWORD);
  });
});

describe('parseNodeConfig', () => {
  const node = { NODE_NAME: 'node-a', KUBELET_ROOT: '/var/lib/kubelet', PLUGLINE_STATE_DIR: '/s' };

  it('reads the node variables', () => {
    expect(parseNodeConfig(node)).toEqual({
      nodeName: 'node-a',
      kubeletRoot: '/var/lib/kubelet',
      stateDir: '/s',
    });
  });

  it.each([
    ['NODE_NAME', { NODE_NAME: 'Bad_Node' }],
    ['NODE_NAME', { NODE_NAME: undefined }],
    ['KUBELET_ROOT', { KUBELET_ROOT: 'var/lib/kubelet' }],
    ['PLUGLINE_STATE_DIR', { PLUGLINE_STATE_DIR: '' }],
  ])('fails fast naming %s', (field, overrides) => {
    expect(fieldOf(() => parseNodeConfig({ ...node, ...overrides }))).toBe(field);
  });
});
