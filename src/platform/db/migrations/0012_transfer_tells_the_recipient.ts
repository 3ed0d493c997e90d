import { sql, type Kysely } from 'kysely';

/**
 * A transfer to a wallet with open positions tells the risk engine of the recipient's
 * wallet too (`NOTIFY p_notify` with its id, on commit), not only of the sender's: the
 * engine valued the recipient at the balance before the credit until its next resync and
 * could raise a margin call on it. `wallet_transfer` of 0007 keeps its signature and
 * every statement; this migration adds the one notice after the sender's, after checking
 * that the sender's notice appears exactly once and the recipient's not at all (down()
 * checks the reverse). The function's whole text is 0007's with this line: a later
 * migration that replaces wallet_transfer must keep it.
 */
const SENDER_NOTICE = 'IF w.margin > 0 AND p_notify IS NOT NULL THEN PERFORM pg_notify(p_notify, w.id::text); END IF;';
const RECIPIENT_NOTICE = 'IF r.margin > 0 AND p_notify IS NOT NULL THEN PERFORM pg_notify(p_notify, r.id::text); END IF;';

async function replaceBody(db: Kysely<unknown>, from: string, to: string, absent?: string): Promise<void> {
  const { rows } = await sql<{ def: string }>`SELECT pg_get_functiondef('wallet_transfer'::regproc) AS def`.execute(db);
  const def = rows[0]!.def;
  if (def.split(from).length !== 2 || (absent !== undefined && def.includes(absent))) throw new Error('wallet_transfer is not the function this migration expects');
  await sql.raw(def.replace(from, to)).execute(db); // CREATE OR REPLACE FUNCTION, same signature
}

export async function up(db: Kysely<unknown>): Promise<void> {
  await replaceBody(db, SENDER_NOTICE, `${SENDER_NOTICE}\n      ${RECIPIENT_NOTICE}`, RECIPIENT_NOTICE);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await replaceBody(db, `${SENDER_NOTICE}\n      ${RECIPIENT_NOTICE}`, SENDER_NOTICE);
}
