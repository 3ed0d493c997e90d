/** `npm run db:migrate`: applies every pending migration and exits. */
import { ConfigError, loadConfig } from '../../config.js';
import { createLogger } from '../logger.js';
import { openDatabaseTarget } from './bootstrap.js';
import { createDatabase } from './database.js';
import { migrateToLatest } from './migrator.js';

const config = (() => {
  try {
    return loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(1);
    }
    throw e;
  }
})();
const log = createLogger({ level: config.logLevel, pretty: config.logPretty, file: config.logFile });
const target = await openDatabaseTarget(config, log);
const database = createDatabase(target.url, { ...config.pool, max: 2 });
try {
  const applied = await migrateToLatest(database.db);
  log.info({ applied }, applied.length ? `applied ${applied.length} migration(s)` : 'database is up to date');
} finally {
  await database.close();
  await target.embedded?.stop();
}
