import { randomBytes } from 'node:crypto';

interface Challenge {
  publicKey: string;
  challenge: string;
  expiresAt: number;
}

/**
 * One-time enrollment challenges, held in memory: a challenge is worthless after a few minutes, and
 * losing them on restart only means the node asks again. Bounded, oldest evicted first.
 */
export class EnrollmentChallenges {
  private readonly challenges = new Map<string, Challenge>();

  constructor(
    private readonly ttlMs = 5 * 60_000,
    private readonly maxChallenges = 10_000,
  ) {}

  issue(publicKey: string, now: Date): { challengeId: string; challenge: string; expiresAt: Date } {
    const challengeId = `enc_${randomBytes(12).toString('hex')}`;
    const challenge = randomBytes(32).toString('base64url');
    const expiresAt = now.getTime() + this.ttlMs;
    this.challenges.set(challengeId, { publicKey, challenge, expiresAt });
    if (this.challenges.size > this.maxChallenges) {
      const oldest = this.challenges.keys().next().value;
      if (oldest !== undefined) this.challenges.delete(oldest);
    }
    return { challengeId, challenge, expiresAt: new Date(expiresAt) };
  }

  /** Takes the challenge out (single use); null when unknown, expired or issued to another key. */
  take(challengeId: string, publicKey: string, now: Date): string | null {
    const entry = this.challenges.get(challengeId);
    if (entry === undefined) return null;
    this.challenges.delete(challengeId);
    if (entry.expiresAt < now.getTime() || entry.publicKey !== publicKey) return null;
    return entry.challenge;
  }
}

/** The exact bytes a node signs to prove it holds the key it enrolls. */
export function enrollmentMessage(challenge: string, publicKey: string): Buffer {
  return Buffer.from(`b3iq-node-enrollment-v1\n${challenge}\n${publicKey}`, 'utf8');
}
