/**
 * Entry point: config → database (embedded or DATABASE_URL) → migrations → listen.
 * SIGINT/SIGTERM stop accepting connections, let in-flight requests finish (bounded
 * by SHUTDOWN_TIMEOUT_MS), close the pool and stop the embedded PostgreSQL.
 *
 * With WORKERS > 1 the primary process only prepares the database (embedded server,
 * migrations, JWT secret) and forks that many workers with Node's cluster; they share
 * the HTTP/WebSocket port and reach the database through DATABASE_URL like any
 * separate process would. A worker that dies is replaced.
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import closeWithGrace from 'close-with-grace';
import { buildApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { openDatabaseTarget } from './platform/db/bootstrap.js';
import { createDatabase } from './platform/db/database.js';
import { migrateToLatest } from './platform/db/migrator.js';
import { NotificationHub } from './platform/db/notifications.js';
import { createLogger } from './platform/logger.js';
import { putSettingOnce } from './modules/auth/auth.repository.js';

function readConfig() {
  try {
    return loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(1);
    }
    throw e;
  }
}

const config = readConfig();
const log = createLogger({ level: config.logLevel, pretty: config.logPretty, file: config.logFile });

async function main() {
  const target = await openDatabaseTarget(config, log);
  const database = createDatabase(target.url, config.pool);
  const hub = new NotificationHub(target.url, log);
  let closing = false;

  // Registered before anything can fail, so a half-started server still stops its PostgreSQL.
  closeWithGrace({ delay: config.shutdownTimeoutMs, logger: log }, async ({ signal, err }) => {
    closing = true;
    if (err) log.error({ err }, 'shutting down after an error');
    else log.info({ signal }, 'shutting down: no new connections, finishing in-flight requests');
    await app?.close();
    await hub.stop();
    await database.close();
    await target.embedded?.stop();
    log.info('shutdown complete');
  });

  const applied = await migrateToLatest(database.db);
  if (applied.length) log.info({ applied }, `applied ${applied.length} migration(s)`);
  // Outside production a generated secret is kept in the database, so every process shares it.
  const jwtSecret = config.jwtSecret ?? (await putSettingOnce(database.db, 'jwt_secret', randomBytes(48).toString('base64url')));
  await hub.start();
  const built = await buildApp({ config, database, log, jwtSecret, hub });
  app = built.app;
  if (config.admin) await built.services.auth.ensureAdmin(config.admin.email, config.admin.password, log);
  if (closing) return;
  await app.listen({ port: config.port, host: config.host });
  const base = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${config.port}`;
  if (cluster.isWorker) log.info(`worker ${cluster.worker!.id} serving on ${base}`);
  else log.info(`serving on ${base} (health: ${base}/health, docs: ${base}/docs)`);
}

let app: Awaited<ReturnType<typeof buildApp>>['app'] | undefined;

/** The cluster primary: prepares the database once, then runs and replaces the workers. */
async function primary() {
  const target = await openDatabaseTarget(config, log);
  const workers = new Set<Worker>();
  let closing = false;
  closeWithGrace({ delay: config.shutdownTimeoutMs + 5_000, logger: log }, async ({ signal, err }) => {
    closing = true;
    if (err) log.error({ err }, 'primary shutting down after an error');
    else log.info({ signal, workers: workers.size }, 'shutting down the workers');
    await Promise.all([...workers].map((w) => new Promise<void>((resolve) => {
      if (w.isDead()) return resolve();
      w.once('exit', () => resolve());
      w.process.kill('SIGTERM');
    })));
    await target.embedded?.stop();
    log.info('shutdown complete');
  });
  const database = createDatabase(target.url, { ...config.pool, max: 2 });
  try {
    const applied = await migrateToLatest(database.db);
    if (applied.length) log.info({ applied }, `applied ${applied.length} migration(s)`);
    if (!config.jwtSecret) await putSettingOnce(database.db, 'jwt_secret', randomBytes(48).toString('base64url'));
  } finally {
    await database.close();
  }
  const fork = (index: number) => {
    // Workers find everything through the environment; only the first ensures the admin.
    const w = cluster.fork({ DATABASE_URL: target.url, WORKER_INDEX: String(index), ...(index > 0 ? { ADMIN_EMAIL: '', ADMIN_PASSWORD: '' } : {}) });
    workers.add(w);
    w.once('exit', (code, signal) => {
      workers.delete(w);
      if (closing) return;
      log.error({ worker: w.id, code, signal }, 'worker died; starting a new one');
      setTimeout(() => { if (!closing) fork(index); }, 1000).unref();
    });
  };
  for (let i = 0; i < config.workers; i++) fork(i);
  log.info({ workers: config.workers }, `primary ${process.pid} forked ${config.workers} workers`);
}

const run = cluster.isPrimary && config.workers > 1 ? primary : main;
run().catch((err) => {
  log.fatal({ err }, `start-up failed: ${err instanceof Error ? err.message : String(err)}`);
  process.kill(process.pid, 'SIGTERM');
});
