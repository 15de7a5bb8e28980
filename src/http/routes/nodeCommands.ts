import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { DomainError } from '../../errors.ts';
import { authenticateNodeRequest } from '../../privateJobs/nodeAuth.ts';
import { claimJob, failJob, pollCommands, registerTransportKey, submitResult } from '../../privateJobs/nodeFlows.ts';
import {
  claimPayloadSchema,
  claimView,
  commandIdSchema,
  commandListView,
  failPayloadSchema,
  nodeIdSchema,
  pollPayloadSchema,
  registrationView,
  resultPayloadSchema,
  resultView,
  signedNodeRequestSchema,
  signedResultRequestSchema,
  transportKeyRegistrationSchema,
} from '../../privateJobs/schemas.ts';
import type { AppDependencies } from '../app.ts';
import { nativeErrorResponse } from '../schemas.ts';
import { privateJobEnvironment } from './privateJobs.ts';

const errors = { 400: nativeErrorResponse, 401: nativeErrorResponse, 403: nativeErrorResponse, 404: nativeErrorResponse, 409: nativeErrorResponse };
const nodeParams = z.strictObject({ node_id: nodeIdSchema });
const commandParams = z.strictObject({ node_id: nodeIdSchema, command_id: commandIdSchema });
/** A result carries the sealed response (up to 2 MiB of plaintext, base64url) inside a signed payload. */
const resultBodyLimitBytes = 4 * 1_048_576;

/**
 * Node ↔ control plane for private jobs (docs/node-protocol.md, Commands): every request is a
 * document signed with the node's Ed25519 key, like a heartbeat. A node registers its X25519
 * transport key, polls its commands (a long poll), claims a job, and posts either the sealed
 * response with its signed receipt or a failure.
 */
export function nodeCommandRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  const env = privateJobEnvironment(dependencies);
  const sameCommand = (path: string, payload: string) => {
    if (path !== payload) throw new DomainError('invalid_request', 'command_id in the payload names another command', 'command_id');
  };
  return async (app) => {
    app.post(
      '/v1/nodes/:node_id/transport-keys',
      {
        schema: {
          summary: "Register the node's X25519 transport key (signed b3iq-transport-key-v1 document)",
          params: nodeParams,
          body: signedNodeRequestSchema,
          response: { 201: registrationView, 200: registrationView, ...errors },
        },
      },
      async (request, reply) => {
        const { payload } = await authenticateNodeRequest(env, request.params.node_id, request.body, transportKeyRegistrationSchema);
        const outcome = await registerTransportKey(env, payload, request.body);
        return reply.code(outcome.replayed ? 200 : 201).send({ node_id: payload.node_id, key_id: payload.key_id, replayed: outcome.replayed });
      },
    );

    app.post(
      '/v1/nodes/:node_id/commands/poll',
      {
        schema: {
          summary: "The node's queued commands; waits up to wait_ms for one when there are none",
          params: nodeParams,
          body: signedNodeRequestSchema,
          response: { 200: commandListView, ...errors },
        },
      },
      async (request) => {
        const { payload } = await authenticateNodeRequest(env, request.params.node_id, request.body, pollPayloadSchema);
        return { commands: await pollCommands(env, payload.node_id, payload.wait_ms, payload.limit) };
      },
    );

    app.post(
      '/v1/nodes/:node_id/commands/:command_id/claim',
      {
        schema: {
          summary: 'Claim a queued private job (queued → claimed) and receive its terms and encrypted request',
          params: commandParams,
          body: signedNodeRequestSchema,
          response: { 200: claimView, ...errors },
        },
      },
      async (request) => {
        const { payload } = await authenticateNodeRequest(env, request.params.node_id, request.body, claimPayloadSchema);
        sameCommand(request.params.command_id, payload.command_id);
        return claimJob(env, payload.node_id, payload.command_id, payload.job_id);
      },
    );

    app.post(
      '/v1/nodes/:node_id/commands/:command_id/result',
      {
        bodyLimit: resultBodyLimitBytes,
        schema: {
          summary: 'Post the sealed response and the signed receipt of a claimed job (claimed → awaiting-receipt → completed)',
          params: commandParams,
          body: signedResultRequestSchema,
          response: { 200: resultView, ...errors },
        },
      },
      async (request) => {
        const { payload, publicKey } = await authenticateNodeRequest(env, request.params.node_id, request.body, resultPayloadSchema);
        sameCommand(request.params.command_id, payload.command_id);
        return submitResult(env, payload.node_id, publicKey, payload);
      },
    );

    app.post(
      '/v1/nodes/:node_id/commands/:command_id/fail',
      {
        schema: {
          summary: 'Give up a queued or claimed job with a reason code; its reservation is released',
          params: commandParams,
          body: signedNodeRequestSchema,
          response: { 200: resultView, ...errors },
        },
      },
      async (request) => {
        const { payload } = await authenticateNodeRequest(env, request.params.node_id, request.body, failPayloadSchema);
        sameCommand(request.params.command_id, payload.command_id);
        return failJob(env, payload.node_id, payload);
      },
    );
  };
}
