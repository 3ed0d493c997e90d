import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { sendData } from '../../platform/http/envelope.js';
import { EmptyBody } from '../../platform/http/schemas.js';
import { asAppLogger } from '../../platform/logger.js';
import type { AuthService } from './auth.service.js';

const Email = Type.String({ minLength: 3, maxLength: 254, pattern: '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$', description: 'Stored and returned lower-cased' });
const Password = Type.String({ minLength: 8, maxLength: 128 });

export function authRoutes(app: FastifyInstance, auth: AuthService) {
  app.post<{ Body: { email: string; password: string; referralCode?: string } }>('/api/v1/auth/register', {
    schema: {
      tags: ['auth'], summary: 'Register: a user with a live wallet (0.00) and a demo wallet',
      body: Type.Object({ email: Email, password: Password, referralCode: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })) }, { additionalProperties: false }),
    },
  }, async (req, reply) => sendData(reply, 201, await auth.register(req.body, req.id, asAppLogger(req.log))));

  app.post<{ Body: { email: string; password: string } }>('/api/v1/auth/login', {
    schema: {
      tags: ['auth'], summary: 'Log in (5 failures per email and IP in 15 minutes lock that pair out)',
      body: Type.Object({ email: Type.String({ minLength: 1, maxLength: 254 }), password: Type.String({ minLength: 1, maxLength: 128 }) }, { additionalProperties: false }),
    },
  }, async (req, reply) => sendData(reply, 200, await auth.login(req.body, req.ip, asAppLogger(req.log))));

  app.get('/api/v1/me', { config: { auth: true }, schema: { tags: ['auth'], summary: 'The authenticated user' } }, async (req, reply) =>
    sendData(reply, 200, { user: await auth.me(req.authUser!.id) }));

  app.post('/api/v1/auth/logout', { config: { auth: true }, schema: { tags: ['auth'], summary: 'Revoke every token issued to this user so far', body: EmptyBody } }, async (req, reply) => {
    await auth.logout(req.authUser!.id, asAppLogger(req.log));
    return sendData(reply, 200, {});
  });

  app.post<{ Body: { currentPassword: string; newPassword: string } }>('/api/v1/auth/password', {
    config: { auth: true },
    schema: {
      tags: ['auth'], summary: 'Change the password; every older token stops working',
      body: Type.Object({ currentPassword: Type.String({ minLength: 1, maxLength: 128 }), newPassword: Password }, { additionalProperties: false }),
    },
  }, async (req, reply) => sendData(reply, 200, await auth.changePassword(req.authUser!.id, req.body.currentPassword, req.body.newPassword, asAppLogger(req.log))));
}
