import { HypervisorError } from '@plugline/contracts';

/**
 * A tiny XML element builder. Every attribute value and every text node goes through `escape*`,
 * so a value can never change the document's structure: no XML is ever made by pasting values
 * into strings.
 */
export interface XmlElement {
  readonly name: string;
  /** Attributes in output order; `undefined` values are left out. */
  readonly attributes: Readonly<Record<string, string | number | undefined>>;
  readonly children: readonly (XmlElement | string)[];
}

/** An element; children are elements or text. `undefined`/`false` children are skipped. */
export function el(
  name: string,
  attributes: Record<string, string | number | undefined> = {},
  ...children: (XmlElement | string | undefined | false)[]
): XmlElement {
  assertXmlName(name);
  for (const key of Object.keys(attributes)) assertXmlName(key);
  return {
    name,
    attributes,
    children: children.filter((c): c is XmlElement | string => c !== undefined && c !== false),
  };
}

const XML_NAME = /^[A-Za-z_][A-Za-z0-9_.:-]*$/;
// Characters XML 1.0 cannot carry at all, not even as character references.
// eslint-disable-next-line no-control-regex
const NOT_XML_CHAR = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/;

function assertXmlName(name: string): void {
  if (!XML_NAME.test(name)) {
    throw new HypervisorError('InvalidXml', `${JSON.stringify(name)} is not an XML name`);
  }
}

function assertXmlChars(value: string): void {
  if (NOT_XML_CHAR.test(value)) {
    throw new HypervisorError(
      'InvalidXml',
      `${JSON.stringify(value)} contains a character XML cannot represent`,
    );
  }
}

/** Escapes text content: `&`, `<` and `>`. */
export function escapeText(value: string): string {
  assertXmlChars(value);
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Escapes an attribute value for either quote style: `&`, `<`, `>`, `"`, `'`, and line breaks. */
export function escapeAttribute(value: string): string {
  return escapeText(value)
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;')
    .replace(/\t/g, '&#9;')
    .replace(/\n/g, '&#10;')
    .replace(/\r/g, '&#13;');
}

/** Serializes an element; `indent` > 0 pretty-prints (elements with text stay on one line). */
export function renderXml(element: XmlElement, indent = 2, depth = 0): string {
  const pad = indent > 0 ? ' '.repeat(indent * depth) : '';
  const nl = indent > 0 ? '\n' : '';
  const attrs = Object.entries(element.attributes)
    .filter((entry): entry is [string, string | number] => entry[1] !== undefined)
    .map(([key, value]) => ` ${key}='${escapeAttribute(String(value))}'`)
    .join('');
  const open = `${pad}<${element.name}${attrs}`;
  if (element.children.length === 0) return `${open}/>`;
  if (element.children.every((child) => typeof child === 'string')) {
    return `${open}>${element.children.map((c) => (typeof c === 'string' ? escapeText(c) : '')).join('')}</${element.name}>`;
  }
  const inner = element.children
    .map((child) =>
      typeof child === 'string'
        ? `${pad}${' '.repeat(indent)}${escapeText(child)}`
        : renderXml(child, indent, depth + 1),
    )
    .join(nl);
  return `${open}>${nl}${inner}${nl}${pad}</${element.name}>`;
}
