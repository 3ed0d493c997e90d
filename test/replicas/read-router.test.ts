/**
 * The read router without replicas is the primary and nothing else (the benchmark's
 * hot path): no query, no NOTIFY, no timer. And its pure helpers.
 */
import { CamelCasePlugin, Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { Database } from '../../src/platform/db/schema.js';
import { NotFoundError } from '../../src/platform/errors.js';
import { classifyReplicaError, formatLsn, parseLsn, ReadRouter, replayHorizon } from '../../src/platform/db/read-router.js';

describe('ReadRouter without DATABASE_READ_URLS', () => {
  it('returns the primary and never touches a database', async () => {
    let connects = 0;
    // A pool that counts every attempt to use it: the router must make none.
    const pool = { connect: async () => { connects++; throw new Error('no database here'); }, end: async () => undefined };
    const primary = new Kysely<Database>({ dialect: new PostgresDialect({ pool: pool as unknown as pg.Pool }), plugins: [new CamelCasePlugin()] });
    const router = new ReadRouter({ primary, readUrls: [] });
    router.start();
    expect(router.enabled).toBe(false);
    expect(router.forUser('1')).toBe(primary);
    await router.noteWrite('1');
    expect(await router.read('1', async (db) => (db === primary ? 'primary' : 'other'))).toBe('primary');
    expect(router.status()).toMatchObject({ enabled: false, blind: false, replicas: [], trackedUsers: 0 });
    await router.close();
    expect(connects).toBe(0);
  });
});

describe('read router helpers', () => {
  it('parses and formats LSNs', () => {
    expect(parseLsn('0/0')).toBe(0n);
    expect(parseLsn('16/B374D848')).toBe((0x16n << 32n) | 0xb374d848n);
    expect(formatLsn(parseLsn('16/B374D848'))).toBe('16/B374D848');
    expect(() => parseLsn('nonsense')).toThrow();
  });

  it('treats a replay position at a page or segment start as the first record position after it', () => {
    const seg = 16n * 1024n * 1024n;
    expect(replayHorizon(seg * 3n, 8192, seg)).toBe(seg * 3n + 40n);
    expect(replayHorizon(seg * 3n + 8192n, 8192, seg)).toBe(seg * 3n + 8192n + 24n);
    expect(replayHorizon(seg * 3n + 8200n, 8192, seg)).toBe(seg * 3n + 8200n);
  });

  it('classifies replica failures', () => {
    const withCode = (code: string) => Object.assign(new Error('x'), { code });
    expect(classifyReplicaError(withCode('ECONNREFUSED'))).toBe('connection');
    expect(classifyReplicaError(withCode('57P01'))).toBe('connection');
    expect(classifyReplicaError(withCode('08006'))).toBe('connection');
    expect(classifyReplicaError(withCode('40001'))).toBe('conflict');
    expect(classifyReplicaError(withCode('42P01'))).toBe('other');
    expect(classifyReplicaError(new Error('Connection terminated unexpectedly'))).toBe('unknown');
    expect(classifyReplicaError(new NotFoundError('Wallet'))).toBe('other');
  });
});
