/**
 * Bench users get their tokens minted directly (DESIGN.md: not through 100,000
 * password checks): HS256 JWTs with the claims the server issues, { sub, tv, role },
 * signed with the JWT_SECRET the bench gives the server.
 */
import { createHmac } from 'node:crypto';

const b64url = (v: string | Buffer) => Buffer.from(v).toString('base64url');
const HEADER = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));

export function mintToken(secret: string, claims: { sub: string; tv: number; role: 'user' | 'admin' }, ttlSeconds: number): string {
  const iat = Math.floor(Date.now() / 1000);
  const payload = b64url(JSON.stringify({ ...claims, iat, exp: iat + ttlSeconds }));
  const sig = createHmac('sha256', secret).update(`${HEADER}.${payload}`).digest('base64url');
  return `${HEADER}.${payload}.${sig}`;
}
