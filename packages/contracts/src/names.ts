import { InvalidNameError } from './errors.js';

/** Kubernetes DNS-1123 label: at most 63 characters, lowercase alphanumerics and '-', alphanumeric at both ends. */
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** Kubernetes DNS-1123 subdomain: labels joined by '.', at most 253 characters. */
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export const MAX_LABEL_LENGTH = 63;
export const MAX_SUBDOMAIN_LENGTH = 253;

export type NameKind = 'label' | 'subdomain';

/** Returns why `value` is not a valid name of that kind, or undefined when it is. */
export function nameProblem(value: unknown, kind: NameKind): string | undefined {
  if (typeof value !== 'string') return 'must be a string';
  if (value.length === 0) return 'must not be empty';
  const max = kind === 'label' ? MAX_LABEL_LENGTH : MAX_SUBDOMAIN_LENGTH;
  if (value.length > max) return `must be no more than ${max} characters`;
  const pattern = kind === 'label' ? DNS1123_LABEL : DNS1123_SUBDOMAIN;
  if (!pattern.test(value)) {
    return kind === 'label'
      ? "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
      : "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
  }
  return undefined;
}

/** Validates a Kubernetes name; throws a typed InvalidNameError naming the field and the rule. */
export function assertName(field: string, value: unknown, kind: NameKind): string {
  const problem = nameProblem(value, kind);
  if (problem !== undefined) {
    const shown = typeof value === 'string' ? JSON.stringify(value) : typeof value;
    throw new InvalidNameError(
      field,
      String(value),
      `dns1123-${kind}`,
      `${field} ${shown}: ${problem}`,
    );
  }
  return value as string;
}

export function isName(value: unknown, kind: NameKind): value is string {
  return nameProblem(value, kind) === undefined;
}
