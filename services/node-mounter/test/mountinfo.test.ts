import { describe, expect, it } from 'vitest';

import { mountsAt, parseMountInfo, parseMountInfoLine } from '../src/index.js';

describe('mountinfo', () => {
  it('parses a line with optional fields (proc(5) example)', () => {
    expect(
      parseMountInfoLine(
        '36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue',
      ),
    ).toEqual({
      mountId: 36,
      parentId: 35,
      major: 98,
      minor: 0,
      root: '/mnt1',
      mountPoint: '/mnt2',
      mountOptions: 'rw,noatime',
      optionalFields: ['master:1'],
      fsType: 'ext3',
      source: '/dev/root',
      superOptions: 'rw,errors=continue',
    });
  });

  it('parses a file bind mount without optional fields, and octal escapes', () => {
    const entry = parseMountInfoLine(
      '64 44 254:0 /tmp/a\\040b/disk.img /var/lib/kubelet/pods/x/hotplug-disks/my\\134disk.img rw,relatime - ext4 /dev/vda rw',
    );
    expect(entry?.root).toBe('/tmp/a b/disk.img');
    expect(entry?.mountPoint).toBe('/var/lib/kubelet/pods/x/hotplug-disks/my\\disk.img');
    expect(entry?.optionalFields).toEqual([]);
  });

  it('skips malformed lines and finds stacked mounts', () => {
    const table = parseMountInfo(
      [
        '1 0 8:1 / / rw shared:1 - ext4 /dev/sda1 rw',
        'garbage',
        '2 1 8:1 /x /t rw - ext4 /dev/sda1 rw',
        '3 2 8:1 /x /t rw - ext4 /dev/sda1 rw',
        '4 1 0:5 / /dev rw - devtmpfs',
        '',
      ].join('\n'),
    );
    expect(table.map((e) => e.mountId)).toEqual([1, 2, 3]);
    expect(mountsAt(table, '/t').map((e) => e.mountId)).toEqual([2, 3]);
    expect(mountsAt(table, '/t/')).toEqual([]);
  });
});
