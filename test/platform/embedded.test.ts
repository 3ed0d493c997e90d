/**
 * The embedded PostgreSQL's environment: glibc's allocator tuned for the backends
 * (MALLOC_TUNABLES), unless the operator set GLIBC_TUNABLES.
 */
import fs from 'node:fs';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { MALLOC_TUNABLES, postgresEnvironment } from '../../src/platform/db/embedded.js';

describe("the embedded PostgreSQL's environment", () => {
  it('carries the malloc tunables and C messages, added to an operator’s GLIBC_TUNABLES, whose own values win', () => {
    const env = postgresEnvironment({ PATH: '/bin', LC_ALL: 'de_DE.UTF-8' });
    expect(env.GLIBC_TUNABLES).toBe(MALLOC_TUNABLES);
    expect(MALLOC_TUNABLES).toMatch(/^glibc\.malloc\.trim_threshold=\d+:glibc\.malloc\.mmap_threshold=\d+$/);
    expect(env.LC_ALL).toBe('C');
    expect(env.LC_MESSAGES).toBe('C');
    expect(env.PATH).toBe('/bin');
    expect(postgresEnvironment({ GLIBC_TUNABLES: 'glibc.pthread.rseq=0' }).GLIBC_TUNABLES).toBe(`glibc.pthread.rseq=0:${MALLOC_TUNABLES}`);
    expect(postgresEnvironment({ GLIBC_TUNABLES: 'glibc.malloc.trim_threshold=1048576' }).GLIBC_TUNABLES)
      .toBe(`glibc.malloc.trim_threshold=1048576:${MALLOC_TUNABLES.split(':')[1]}`);
  });

  it.runIf(process.platform === 'linux' && !process.env.TEST_DATABASE_URL && !process.env.GLIBC_TUNABLES)('is what the tests’ own PostgreSQL runs with (its postmaster’s environment)', async () => {
    const c = new pg.Client({ connectionString: inject('adminDbUrl') });
    await c.connect();
    let postmaster: number;
    try {
      const backend = Number((await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid);
      // A backend rewrites its own environment block for its process title; its parent, the postmaster, does not.
      postmaster = Number(fs.readFileSync(`/proc/${backend}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[1]);
    } finally {
      await c.end();
    }
    const environ = fs.readFileSync(`/proc/${postmaster}/environ`, 'utf8').split('\0');
    // Some glibc versions parse the variable in place (it then ends at the first ':'); the first setting stays readable in all.
    const seen = environ.find((v) => v.startsWith('GLIBC_TUNABLES='));
    expect([`GLIBC_TUNABLES=${MALLOC_TUNABLES}`, `GLIBC_TUNABLES=${MALLOC_TUNABLES.split(':')[0]}`]).toContain(seen);
  });
});
