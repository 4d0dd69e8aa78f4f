# Copyright: Contributors to failsafe.deploy
# SPDX-License-Identifier: GPL-3.0-or-later
"""The blue-green demo (make demo-blue-green): on this machine, one app host with two slots behind HAProxy (or nginx
with --nginx), started with their own configuration and ephemeral ports. Under a steady load through the load
balancer it deploys 1.0.0, then 2.0.0 blue-green, then 3.0.0, which fails its verification on the idle slot and is
rolled back there, then switches back to the warm 1.0.0 slot, and prints what the load saw after each step."""

import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'behaviour'))
import lb  # noqa: E402  pylint: disable=wrong-import-position


def main(argv):
    driver = 'nginx' if '--nginx' in argv else 'haproxy'
    why = lb.ensure_prereqs()
    if why:
        print('demo-blue-green: %s' % why)
        return 1
    base = os.environ.get('FAILSAFE_DEMO_DIR') or tempfile.mkdtemp(prefix='failsafe-blue-green-')
    site = lb.BlueGreenSite(os.path.join(base, driver), driver)
    print('==> %s on 127.0.0.1:%d in front of slots blue (:%d) and green (:%d); files under %s'
          % (driver, site.port, site.ports['blue'], site.ports['green'], site.dir))
    load = None
    try:
        steps = [('blue-green deploy of 1.0.0 (first deploy: to blue)', lambda: site.blue_green('1.0.0'))]
        steps += [('blue-green deploy of 2.0.0 (to the idle slot, green)', lambda: site.blue_green('2.0.0')),
                  ('blue-green deploy of 3.0.0 (fails its health check on the idle slot, rolled back there)',
                   lambda: site.blue_green('3.0.0')),
                  ('switch-back to the warm slot', site.switch_back)]
        for i, (what, step) in enumerate(steps):
            print('==> %s' % what, flush=True)
            t0 = time.time()
            proc = step()
            print('    ansible-playbook exited %d after %.1f s (its output: %s/runs.log)'
                  % (proc.returncode, time.time() - t0, site.dir))
            if i == 0:
                load = lb.Load(site.port).start()
                print('    steady load started: GET /version through the load balancer, no keep-alive')
            else:
                time.sleep(0.5)
                seen = {}
                for v in load.served_since(t0):
                    seen[v or 'failed'] = seen.get(v or 'failed', 0) + 1
                print('    answers during and after this step: %s' % ', '.join(
                    '%s x%d' % kv for kv in sorted(seen.items())))
            print('    live slot: %s; /version through the load balancer: %s' % (site.live(), lb.get(site.port)[1]))
        load.stop()
        print('==> %d requests, %d failed' % (load.total, len(load.failures)))
        return 0 if not load.failures else 1
    finally:
        if load:
            load.stop()
        site.stop()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
