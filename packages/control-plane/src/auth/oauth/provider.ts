// OAuth providers behind one small interface; the routes know nothing provider-specific.

export interface OAuthProfile {
  /** The provider's stable account id (as text). */
  id: string;
  /** A verified email address. */
  email: string;
  name: string;
  login: string;
}

export interface OAuthProvider {
  readonly name: string;
  /** Where to send the browser; `state` must come back unchanged on the callback. */
  authorizeUrl(state: string): string;
  /** Trades the callback's code for the user's profile. */
  exchange(code: string): Promise<OAuthProfile>;
}

export class OAuthRegistry {
  private readonly providers = new Map<string, OAuthProvider>();

  register(provider: OAuthProvider): void {
    this.providers.set(provider.name, provider);
  }

  get(name: string): OAuthProvider | undefined {
    return this.providers.get(name);
  }

  names(): string[] {
    return [...this.providers.keys()];
  }
}
