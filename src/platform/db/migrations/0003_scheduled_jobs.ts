import { sql, type Kysely } from 'kysely';

/** Last run and outcome of each scheduled job, shared by every process. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE scheduled_jobs (
      name text PRIMARY KEY,
      last_started_at timestamptz,
      last_finished_at timestamptz,
      last_ok boolean,
      last_outcome jsonb
    );
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE scheduled_jobs`.execute(db);
}
