/**
 * Which filesystem the ledger is on (src/ledger/filesystem.ts), from mountinfo text: network
 * filesystems are refused at start-up because SQLite's WAL locking is unsafe on them.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, refuseNetworkLedger } from '../../src/config/config-file.js';
import { mountOf, NETWORK_FILESYSTEMS, parseMountinfo } from '../../src/ledger/filesystem.js';

// A real-looking /proc/self/mountinfo: root on ext4, an NFS export, a CIFS share with a space
// in its mount point, sshfs, a tmpfs stacked over part of the NFS mount, a bind mount.
const MOUNTINFO = [
  '22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw',
  '27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro',
  '40 27 0:45 / /srv/nfs rw,relatime shared:30 - nfs4 fileserver:/export/vms rw,vers=4.2,addr=10.0.0.2',
  '41 27 0:46 / /mnt/smb\\040share rw,relatime shared:31 - cifs //nas/vms rw,vers=3.1.1',
  '42 27 0:47 / /mnt/remote rw,nosuid,nodev,relatime shared:32 - fuse.sshfs user@host:/data rw,user_id=0',
  '43 40 0:48 / /srv/nfs/local-cache rw,relatime shared:33 - tmpfs tmpfs rw,size=1024k',
  '44 27 8:1 /var/lib/vms-uplink /srv/nfsish rw,relatime shared:1 - ext4 /dev/sda1 rw',
  '45 27 0:49 / /mnt/p9 rw,relatime - 9p hostshare rw,trans=virtio',
  '',
].join('\n');

const mounts = parseMountinfo(MOUNTINFO);
const fsOf = (path: string): string | undefined => mountOf(path, mounts)?.fsType;

describe('ledger filesystem detection', () => {
  it('parses mount points (unescaping \\040), filesystem types and sources past the optional fields', () => {
    expect(mounts).toHaveLength(8);
    expect(mounts[2]).toEqual({ mountPoint: '/srv/nfs', fsType: 'nfs4', source: 'fileserver:/export/vms' });
    expect(mounts[3]).toEqual({ mountPoint: '/mnt/smb share', fsType: 'cifs', source: '//nas/vms' });
  });

  it('takes the longest mount point that is a whole-component prefix of the path', () => {
    expect(fsOf('/var/lib/vms-uplink/ledger.db')).toBe('ext4');
    expect(fsOf('/srv/nfs/vms/ledger.db')).toBe('nfs4');
    expect(fsOf('/srv/nfs')).toBe('nfs4');
    // A mount stacked inside the NFS mount is what holds paths below it.
    expect(fsOf('/srv/nfs/local-cache/ledger.db')).toBe('tmpfs');
    // "/srv/nfsish" is not below "/srv/nfs".
    expect(fsOf('/srv/nfsish/ledger.db')).toBe('ext4');
    expect(fsOf('/mnt/smb share/ledger.db')).toBe('cifs');
    expect(fsOf('/mnt/remote/x/ledger.db')).toBe('fuse.sshfs');
    expect(fsOf('/mnt/p9/ledger.db')).toBe('9p');
  });

  it('a later mount on the same mount point hides the earlier one', () => {
    const stacked = parseMountinfo(`${MOUNTINFO}50 40 0:60 / /srv/nfs rw - ext4 /dev/sdb1 rw\n`);
    expect(mountOf('/srv/nfs/ledger.db', stacked)?.fsType).toBe('ext4');
  });

  it('counts NFS, SMB, sshfs, 9p, AFS, Ceph and GlusterFS as network filesystems, local ones not', () => {
    for (const t of ['nfs', 'nfs4', 'cifs', 'smb3', 'smbfs', 'fuse.sshfs', '9p', 'afs', 'ceph', 'glusterfs'])
      expect(NETWORK_FILESYSTEMS.has(t), t).toBe(true);
    for (const t of ['ext4', 'xfs', 'btrfs', 'zfs', 'tmpfs', 'overlay', 'f2fs']) expect(NETWORK_FILESYSTEMS.has(t), t).toBe(false);
  });

  it('ignores lines that are not mountinfo', () => {
    expect(parseMountinfo('garbage\n1 2 3\n\n')).toEqual([]);
    expect(mountOf('/x', [])).toBeNull();
  });
});

describe('a ledger on a network filesystem', () => {
  it('is refused like a bad configuration (exit 2), naming ledger.path and the filesystem; a local one is not', () => {
    for (const [path, fsType] of [
      ['/srv/nfs/vms/ledger.db', 'nfs4'],
      ['/mnt/smb share/ledger.db', 'cifs'],
      ['/mnt/remote/l.db', 'fuse.sshfs'],
      ['/mnt/p9/l.db', '9p'],
    ] as const) {
      let problem: unknown = null;
      try {
        refuseNetworkLedger('/etc/vms-uplink/config.yaml', path, () => MOUNTINFO);
      } catch (err) {
        problem = err;
      }
      expect(problem, path).toBeInstanceOf(ConfigError);
      expect((problem as ConfigError).problems).toEqual([
        expect.stringMatching(new RegExp(`^ledger\\.path: ${path} is on a network filesystem \\(${fsType.replace('.', '\\.')}, `)),
      ]);
    }
    expect(() => refuseNetworkLedger('/etc/vms-uplink/config.yaml', '/var/lib/vms-uplink/ledger.db', () => MOUNTINFO)).not.toThrow();
    expect(() => refuseNetworkLedger('/etc/vms-uplink/config.yaml', '/srv/nfs/local-cache/ledger.db', () => MOUNTINFO)).not.toThrow();
  });
});
