import { assertName } from '@plugline/contracts';

/** The prefix KubeVirt gives the alias of a user disk: `ua-<volume>`. */
export const USER_ALIAS_PREFIX = 'ua-';

/** The libvirt domain name of a VMI, as virt-launcher names it: `<namespace>_<vmi>`. */
export function domainNameOf(namespace: string, vmi: string): string {
  assertName('namespace', namespace, 'label');
  assertName('vmi', vmi, 'subdomain');
  return `${namespace}_${vmi}`;
}

/** Splits a domain name made by {@link domainNameOf}; undefined for other names. */
export function parseDomainName(domain: string): { namespace: string; vmi: string } | undefined {
  const at = domain.indexOf('_');
  if (at <= 0) return undefined;
  return { namespace: domain.slice(0, at), vmi: domain.slice(at + 1) };
}

/** The device alias of a hotplugged volume's disk: `ua-<volume>`. */
export function aliasOf(volume: string): string {
  return `${USER_ALIAS_PREFIX}${volume}`;
}

/** The volume a `ua-<volume>` alias belongs to, or undefined for other aliases. */
export function volumeOfAlias(alias: string | undefined): string | undefined {
  if (alias === undefined || !alias.startsWith(USER_ALIAS_PREFIX)) return undefined;
  const volume = alias.slice(USER_ALIAS_PREFIX.length);
  return volume === '' ? undefined : volume;
}
