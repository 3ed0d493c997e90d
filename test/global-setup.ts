/**
 * Starts one embedded PostgreSQL for the whole run (or uses TEST_DATABASE_URL),
 * migrates a template database once; each test file then gets its own copy
 * (CREATE DATABASE … TEMPLATE …), so files run in parallel without sharing rows.
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { EmbeddedPostgres } from '../src/platform/db/embedded.js';
import { createDatabase } from '../src/platform/db/database.js';
import { migrateToLatest } from '../src/platform/db/migrator.js';

export const TEMPLATE_DB = 'trading_test_template';

declare module 'vitest' {
  export interface ProvidedContext {
    adminDbUrl: string;
    templateDb: string;
  }
}

function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

export default async function setup(project: TestProject) {
  let adminUrl = process.env.TEST_DATABASE_URL;
  let embedded: EmbeddedPostgres | undefined;
  const dataDir = path.resolve('.test-data', `run-${process.pid}`);
  if (!adminUrl) {
    embedded = new EmbeddedPostgres({
      dataDir,
      port: 0,
      maxConnections: 400,
      user: process.env.EMBEDDED_PG_USER ?? 'postgres',
      // Test data is thrown away: trade durability for speed.
      settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', shared_buffers: '128MB' },
    });
    adminUrl = await embedded.start();
  }
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  await client.query(`DROP DATABASE IF EXISTS ${TEMPLATE_DB} WITH (FORCE)`);
  await client.query(`CREATE DATABASE ${TEMPLATE_DB}`);
  await client.end();
  const template = createDatabase(withDatabase(adminUrl, TEMPLATE_DB), { max: 1, min: 0, acquireTimeoutMs: 30_000, idleTimeoutMs: 1000 });
  await migrateToLatest(template.db);
  await template.close();

  project.provide('adminDbUrl', adminUrl);
  project.provide('templateDb', TEMPLATE_DB);

  return async () => {
    await embedded?.stop();
    if (embedded) fs.rmSync(dataDir, { recursive: true, force: true });
  };
}
