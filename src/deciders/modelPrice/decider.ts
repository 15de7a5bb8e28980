import type { ModelPriceEvent } from '../../events/node.ts';
import { formatWei } from '../../money.ts';
import type { Decider } from '../decider.ts';

/** The price list of one model. Quotes are money decisions, so they read this state, not a projection. */
export type ModelPriceCommand = {
  type: 'SetModelPrice';
  modelId: string;
  promptPricePerMillionWei: bigint;
  completionPricePerMillionWei: bigint;
  policyVersion: string;
};

export type ModelPriceState =
  | { status: 'unpriced' }
  | { status: 'priced'; modelId: string; promptPricePerMillionWei: bigint; completionPricePerMillionWei: bigint; policyVersion: string };

export function initialState(): ModelPriceState {
  return { status: 'unpriced' };
}

export function decide(command: ModelPriceCommand, state: ModelPriceState): ModelPriceEvent[] {
  if (
    state.status === 'priced' &&
    state.promptPricePerMillionWei === command.promptPricePerMillionWei &&
    state.completionPricePerMillionWei === command.completionPricePerMillionWei &&
    state.policyVersion === command.policyVersion
  ) {
    return [];
  }
  return [
    {
      type: 'ModelPriceSet',
      data: {
        model_id: command.modelId,
        prompt_price_per_million_wei: formatWei(command.promptPricePerMillionWei),
        completion_price_per_million_wei: formatWei(command.completionPricePerMillionWei),
        policy_version: command.policyVersion,
      },
    },
  ];
}

export function evolve(_state: ModelPriceState, event: ModelPriceEvent): ModelPriceState {
  return {
    status: 'priced',
    modelId: event.data.model_id,
    promptPricePerMillionWei: BigInt(event.data.prompt_price_per_million_wei),
    completionPricePerMillionWei: BigInt(event.data.completion_price_per_million_wei),
    policyVersion: event.data.policy_version,
  };
}

export const modelPriceDecider: Decider<ModelPriceCommand, ModelPriceEvent, ModelPriceState> = { decide, evolve, initialState };
