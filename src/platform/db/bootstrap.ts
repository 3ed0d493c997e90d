/**
 * Finds the database to use: DATABASE_URL, or an embedded PostgreSQL in DATA_DIR
 * (started here, with a `trading` database created on first start).
 */
import pg from 'pg';
import type { Config } from '../../config.js';
import type { AppLogger } from '../logger.js';
import { EmbeddedPostgres } from './embedded.js';

export const EMBEDDED_DATABASE = 'trading';

export interface DatabaseTarget {
  url: string;
  embedded?: EmbeddedPostgres;
}

export async function ensureDatabase(adminUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (!rowCount) await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
  } finally {
    await client.end();
  }
}

export async function openDatabaseTarget(config: Readonly<Config>, log: AppLogger): Promise<DatabaseTarget> {
  if (config.databaseUrl) return { url: config.databaseUrl };
  const embedded = new EmbeddedPostgres({
    dataDir: config.dataDir,
    port: config.embeddedPg.port,
    maxConnections: config.embeddedPg.maxConnections,
    user: config.embeddedPg.user,
    log: (msg) => log.info({ component: 'embedded-postgres' }, msg),
  });
  await embedded.start();
  await ensureDatabase(embedded.url(), EMBEDDED_DATABASE);
  return { url: embedded.url(EMBEDDED_DATABASE), embedded };
}
