import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { GuestHarnessError } from './errors.js';

/** One block device as the guest reported it. */
export interface GuestDisk {
  /** The guest's name for it (`sda`, `vdb`). */
  name: string;
  /** The serial the guest read (SCSI VPD page 0x80, or virtio's), undefined when it has none. */
  serial: string | undefined;
  /** Hex of bytes 0-15, undefined when the guest could not read the disk. */
  head: string | undefined;
  /** Hex of bytes 512-527 (where the guest writes `PLGGUEST:written`), undefined when unreadable. */
  sector1: string | undefined;
}

/** One `PLUGLINE-DISKS` line of the guest's console. */
export interface DiskReport {
  /** The guest's sequence number (it starts at 1 with every boot). */
  seq: number;
  disks: GuestDisk[];
}

/** A report and when the host read it (`Date.now()`, as soon as QEMU wrote it: see GuestConsole). */
export interface ReceivedDiskReport extends DiskReport {
  receivedAt: number;
}

/**
 * A block-device uevent as the guest's kernel announced it (`PLUGLINE-UEVENT <action> <device>`,
 * echoed before the guest reads any disk), and when the host read it.
 */
export interface GuestUevent {
  /** `add`, `remove`, `change`, ... */
  action: string;
  /** `sda`, `vdb`. */
  device: string;
  receivedAt: number;
}

const UEVENT = /^PLUGLINE-UEVENT (\S+) (\S+)$/;

/** Parses `PLUGLINE-UEVENT <action> <device>`; undefined for any other line. */
export function parseUevent(line: string): Omit<GuestUevent, 'receivedAt'> | undefined {
  const m = UEVENT.exec(line.trim());
  return m === null ? undefined : { action: m[1]!, device: m[2]! };
}

const REPORT = /^PLUGLINE-DISKS (\d+)((?: [a-z]+=[^ ]*)*) end$/;

function field(value: string | undefined): string | undefined {
  return value === undefined || value === '-' || value === '' ? undefined : value;
}

/**
 * Parses `PLUGLINE-DISKS <seq> [<name>=<serial>,<hex0>,<hex512>]... end` (the format
 * `test/guest/guest-init.sh` prints); undefined for any other line, including a report the
 * kernel's own console output cut in two.
 */
export function parseDiskReport(line: string): DiskReport | undefined {
  const m = REPORT.exec(line.trim());
  if (m === null) return undefined;
  const disks: GuestDisk[] = [];
  for (const item of m[2]!.trim().split(' ')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    const [serial, head, sector1] = item.slice(eq + 1).split(',');
    disks.push({
      name: item.slice(0, eq),
      serial: field(serial)?.replaceAll('%20', ' '),
      head: field(head),
      sector1: field(sector1),
    });
  }
  return { seq: Number(m[1]), disks };
}

/** The hex the guest prints for an ASCII string (to compare with `head` / `sector1`). */
export function hexOf(text: string): string {
  return Buffer.from(text, 'latin1').toString('hex');
}

export interface ConsoleWaitOptions {
  /** Default 30 s. */
  timeout?: number;
}

/** While the console file does not exist yet, and as a safety net behind the file watch. */
const CONSOLE_POLL_MS = 250;

/**
 * Follows the guest's serial console (a file QEMU appends to) and keeps its disk reports and
 * uevents. The file is watched (inotify), so a line is read, and stamped, as soon as QEMU wrote
 * it, not at the next tick of a poll; a slow poll covers the time before the file exists.
 * Waits are woken by each new report.
 */
export class GuestConsole {
  private handle: FileHandle | undefined;
  private watcher: FSWatcher | undefined;
  private offset = 0;
  private partial = '';
  private text = '';
  private timer: NodeJS.Timeout | undefined;
  private reading: Promise<void> | undefined;
  private dirty = false;
  private readonly received: ReceivedDiskReport[] = [];
  private readonly uevents: GuestUevent[] = [];
  private readonly onReport = new Set<() => void>();

  constructor(
    readonly file: string,
    private readonly pollMs = CONSOLE_POLL_MS,
  ) {}

  /** Starts following the file (it may not exist yet). */
  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => void this.poll(), this.pollMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    this.watcher?.close();
    this.watcher = undefined;
    await this.reading;
    await this.handle?.close();
    this.handle = undefined;
  }

  /** Reads what was appended since the last read (the watch and the waits call it). */
  poll(): Promise<void> {
    if (this.reading !== undefined) {
      // Read again once the current read is done: it may have missed the latest write.
      this.dirty = true;
      return this.reading;
    }
    this.reading = this.readAppended().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async readAppended(): Promise<void> {
    do {
      this.dirty = false;
      if (this.handle === undefined && !(await this.openFile())) return;
      const buffer = Buffer.alloc(64 * 1024);
      for (;;) {
        const { bytesRead } = await this.handle!.read(buffer, 0, buffer.length, this.offset);
        if (bytesRead === 0) break;
        this.offset += bytesRead;
        this.consume(buffer.subarray(0, bytesRead).toString('latin1'));
      }
    } while (this.dirty);
  }

  /** Opens the file and watches it; false while it does not exist. */
  private async openFile(): Promise<boolean> {
    this.handle = await open(this.file, 'r').catch(() => undefined);
    if (this.handle === undefined || this.timer === undefined) return this.handle !== undefined;
    try {
      this.watcher = watch(this.file, { persistent: false }, () => void this.poll());
      this.watcher.on('error', () => {
        // The slow poll goes on reading.
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch {
      // No inotify: the slow poll still reads the file.
    }
    return true;
  }

  private consume(chunk: string): void {
    const now = Date.now();
    this.text = (this.text + chunk).slice(-200_000);
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    let reported = false;
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '');
      const report = parseDiskReport(line);
      if (report !== undefined) {
        this.received.push({ ...report, receivedAt: now });
        reported = true;
        continue;
      }
      const uevent = parseUevent(line);
      if (uevent !== undefined) this.uevents.push({ ...uevent, receivedAt: now });
    }
    if (reported) for (const wake of [...this.onReport]) wake();
  }

  /** Every report so far, oldest first. */
  get reports(): readonly ReceivedDiskReport[] {
    return this.received;
  }

  /** Every block uevent the guest echoed so far, oldest first. */
  get blockEvents(): readonly GuestUevent[] {
    return this.uevents;
  }

  latest(): ReceivedDiskReport | undefined {
    return this.received.at(-1);
  }

  /** The console's text (the last 200 kB), for failure messages. */
  output(): string {
    return this.text;
  }

  /** Waits for a report that satisfies `accept`; resolves with it. */
  async waitForReport(
    accept: (report: ReceivedDiskReport) => boolean,
    description: string,
    options: ConsoleWaitOptions = {},
  ): Promise<ReceivedDiskReport> {
    // The report current at the call, and every later one, each looked at once.
    let next = Math.max(0, this.received.length - 1);
    const timeout = options.timeout ?? 30_000;
    const check = (): ReceivedDiskReport | undefined => {
      for (; next < this.received.length; next += 1) {
        const report = this.received[next]!;
        if (accept(report)) return report;
      }
      return undefined;
    };
    await this.poll();
    const found = check();
    if (found !== undefined) return found;
    return new Promise<ReceivedDiskReport>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        clearInterval(poller);
        this.onReport.delete(wake);
      };
      const wake = (): void => {
        const report = check();
        if (report === undefined) return;
        done();
        resolve(report);
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new GuestHarnessError(
            `timed out after ${timeout} ms waiting for the guest to report ${description} ` +
              `(last: ${this.describeLatest()}); console tail:\n${this.text.slice(-1500)}`,
          ),
        );
      }, timeout);
      this.onReport.add(wake);
      // A console that was not started (or lost its watch) is still read while someone waits.
      const poller = setInterval(() => void this.poll(), this.pollMs);
    });
  }
  /** Waits until the guest lists a disk with this serial; resolves with it and the report. */
  async waitForDisk(
    serial: string,
    options: ConsoleWaitOptions = {},
  ): Promise<{ disk: GuestDisk; report: ReceivedDiskReport }> {
    const report = await this.waitForReport(
      (r) => r.disks.some((d) => d.serial === serial),
      `a disk with serial ${serial}`,
      options,
    );
    return { disk: report.disks.find((d) => d.serial === serial)!, report };
  }

  /**
   * Waits until the guest no longer lists a disk with this serial, nor, under the name it had, a
   * disk whose serial it cannot read (a SCSI disk loses its serial before it goes away).
   */
  async waitForDiskGone(
    serial: string,
    options: ConsoleWaitOptions = {},
  ): Promise<ReceivedDiskReport> {
    let name = [...this.received]
      .reverse()
      .flatMap((r) => r.disks)
      .find((d) => d.serial === serial)?.name;
    return this.waitForReport(
      (r) => {
        const disk = r.disks.find((d) => d.serial === serial);
        if (disk !== undefined) {
          name = disk.name;
          return false;
        }
        return !r.disks.some((d) => d.name === name && d.serial === undefined);
      },
      `no disk with serial ${serial}`,
      options,
    );
  }

  private describeLatest(): string {
    const last = this.latest();
    if (last === undefined) return 'no report yet';
    const disks = last.disks.map((d) => `${d.name}=${d.serial ?? '-'}`).join(' ');
    return `#${last.seq} ${disks === '' ? 'no disks' : disks}`;
  }
}
