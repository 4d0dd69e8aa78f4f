# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""Command line for the namespace test fleet.

    python -m tests.fleet up -n 3 --dir /tmp/fleet     # prints the inventory path
    python -m tests.fleet status --dir /tmp/fleet
    python -m tests.fleet crash|restart|cut|restore HOST --dir /tmp/fleet
    python -m tests.fleet down --dir /tmp/fleet
    python -m tests.fleet down --all [--prefix fsd] [--exact]  # also leftovers of killed runs
"""

import argparse
import json
import os
import sys

from .fleet import DEFAULT_NAME, Fleet, FleetError, down_all, ensure_prereqs


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m tests.fleet', description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    up = sub.add_parser('up', help='build a fleet and print its inventory path')
    up.add_argument('-n', type=int, default=3, help='number of hosts (default 3)')
    up.add_argument('--dir', required=True, help='folder for keys, inventory, host folders and state')
    up.add_argument('--name', default=DEFAULT_NAME, help='fleet name, prefix of every resource (default %(default)s)')
    up.add_argument('--subnet', help='private /24 (default: FAILSAFE_FLEET_SUBNET or derived from the name)')
    up.add_argument('--json', action='store_true', help='print the molecule instance config as JSON instead')
    up.add_argument('--init', choices=('sshd', 'systemd'), default='sshd',
                    help="PID 1 of each host: sshd alone, or systemd with sshd as a unit (default %(default)s)")
    down = sub.add_parser('down', help='tear a fleet down')
    group = down.add_mutually_exclusive_group(required=True)
    group.add_argument('--dir', help='the folder given to up')
    group.add_argument('--all', action='store_true', help='every fleet whose name starts with --prefix')
    down.add_argument('--prefix', default=DEFAULT_NAME, help='with --all (default %(default)s)')
    down.add_argument('--exact', action='store_true', help='with --all: only the fleet named exactly --prefix')
    status = sub.add_parser('status', help='show hosts, pids, network and ssh state')
    status.add_argument('--dir', required=True)
    status.add_argument('--json', action='store_true')
    for verb, text in (('crash', 'kill every process of a host'), ('restart', 'boot a crashed host again'),
                       ('cut', 'cut the network of a host'), ('restore', 'restore the network of a host')):
        cmd = sub.add_parser(verb, help=text)
        cmd.add_argument('host')
        cmd.add_argument('--dir', required=True)
    args = parser.parse_args(argv)

    try:
        if args.command == 'up':
            ensure_prereqs(init=args.init)
            fleet = Fleet(args.n, name=args.name, subnet=args.subnet, base_dir=args.dir, cleanup_at_exit=False,
                          init=args.init)
            fleet.up()
            if args.json:
                print(json.dumps(fleet.molecule_instances(), indent=2))
            else:
                print(fleet.inventory_path)
        elif args.command == 'down':
            if args.all:
                for item in down_all(prefix=args.prefix, exact=args.exact):
                    print('removed', item)
            elif os.path.isfile(os.path.join(args.dir, 'state.json')):
                Fleet.load(args.dir).down()
            else:
                print('no fleet in %s' % args.dir, file=sys.stderr)
        elif args.command == 'status':
            fleet = Fleet.load(args.dir)
            rows = fleet.status()
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                print('fleet %s  subnet %s  inventory %s' % (fleet.name, fleet.subnet, fleet.inventory_path))
                for row in rows:
                    print('%(name)-12s %(address)-15s pid=%(pid)-8s running=%(running)-5s network=%(network)-7s '
                          'ssh=%(ssh)s' % row)
        else:
            fleet = Fleet.load(args.dir)
            if args.command == 'crash':
                fleet.crash(args.host)
            elif args.command == 'restart':
                fleet.restart(args.host)
            elif args.command == 'cut':
                fleet.cut(args.host)
            elif args.command == 'restore':
                fleet.restore_network(args.host)
    except (FleetError, KeyError, ValueError) as exc:
        print('fleet: %s' % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
