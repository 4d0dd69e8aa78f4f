# -*- coding: utf-8 -*-
# Copyright: Contributors to failsafe.deploy
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
name: auto_rollback
type: notification
short_description: Roll back failed deploys automatically, alert, and write the incident report
version_added: 0.1.0
author:
  - failsafe.deploy maintainers (@failsafe-deploy)
description:
  - Watches the run for hosts that open a deploy transaction (results carrying C(failsafe_transaction) from
    M(failsafe.deploy.deploy_state)) and for hosts that fail or become unreachable while their transaction is open.
  - Failures that are rescued by a C(block)/C(rescue), and failures of tasks with C(ignore_errors) or
    C(ignore_unreachable), do not count.
  - On the first counted failure of a host it classifies the cause (network, input, missing_configuration,
    infrastructure, config_error, start_failure, health, script_error, unknown) and sends a C(deploy_failed) alert
    at once.
  - When the run ends it starts the rollback playbook as a child C(ansible-playbook) for the hosts in scope, with
    the same inventory sources, the original C(-e) arguments and connection options, C(--limit) to those hosts, and
    C(-e @file) holding C(failsafe_rollback_run_id), C(failsafe_rollback_hosts), C(failsafe_rollback_incident) and
    C(failsafe_rollback_connection).
  - >-
    C(failsafe_rollback_connection) carries, per host, the play keywords C(connection), C(remote_user), C(become),
    C(become_method) and C(become_user) that the play which opened the host's transaction set explicitly (templated
    values resolved with that host's variables). The rollback playbook applies them, so a host deployed by a
    C(connection: local) or C(become: true) play is rolled back the same way; a host variable such as
    C(ansible_connection) or C(ansible_become) still wins over them, as it does over any play keyword.
  - The child runs with E(FAILSAFE_ROLLBACK_CHILD=1); in that mode this callback never starts a rollback itself and
    instead writes the per-host outcome of the rollback run, including every C(failsafe_rollback) value a task
    returned, to the file named by E(FAILSAFE_ROLLBACK_RESULT).
  - It then sends a C(rolled_back) alert (every host rolled back and none reported a failed verification) or a
    critical C(rollback_failed) alert (anything else, including a timeout or a missing result), and writes the
    incident report as C(<report_dir>/<incident_id>.json), C(.md) and C(.html) (a self-contained page with a
    timeline picture), with the rollback log beside them.
  - A callback cannot set the exit code of C(ansible-playbook). A run that needed a rollback has failed hosts and
    therefore already exits non-zero (2, or 4 for unreachable hosts), whether or not the rollback worked. A failed
    rollback is made loud by a C(ROLLBACK FAILED) banner, the critical alert and the report.
  - The callback never raises out of an event and every outbound call has a timeout; problems become warnings.
  - Secrets are redacted from alerts, reports and the echoed child output; results of C(no_log) tasks are
    censored; extra vars are never recorded.
requirements:
  - Enable it with C(callbacks_enabled = failsafe.deploy.auto_rollback) in C(ansible.cfg), or
    E(ANSIBLE_CALLBACKS_ENABLED).
options:
  enabled:
    description: Master switch. When false the callback does nothing.
    type: bool
    default: true
    env:
      - name: FAILSAFE_AUTO_ROLLBACK_ENABLED
    ini:
      - section: failsafe_auto_rollback
        key: enabled
  rollback_playbook:
    description:
      - The rollback playbook, as a collection playbook name or a path.
      - A relative path is looked up in the current directory, then beside the playbook being run.
    type: str
    default: failsafe.deploy.rollback
    env:
      - name: FAILSAFE_ROLLBACK_PLAYBOOK
    ini:
      - section: failsafe_auto_rollback
        key: rollback_playbook
  rollback_scope:
    description:
      - Which hosts are rolled back when any host fails with an open transaction.
      - V(opened) is every host that opened a transaction in this run, whether it failed or not and even if it
        committed since, so the fleet is never left on mixed releases.
      - V(failed) is only the hosts that failed or became unreachable with an open transaction.
    type: str
    choices: [opened, failed]
    default: opened
    env:
      - name: FAILSAFE_ROLLBACK_SCOPE
    ini:
      - section: failsafe_auto_rollback
        key: rollback_scope
  rollback_timeout:
    description: Seconds the rollback playbook may run; then it is killed and the outcome is ROLLBACK FAILED.
    type: int
    default: 900
    env:
      - name: FAILSAFE_ROLLBACK_TIMEOUT
    ini:
      - section: failsafe_auto_rollback
        key: rollback_timeout
  report_dir:
    description: Directory of the incident reports, the rollback logs and (by default) the alert spool.
    type: path
    default: ./failsafe-incidents
    env:
      - name: FAILSAFE_REPORT_DIR
    ini:
      - section: failsafe_auto_rollback
        key: report_dir
  junit_file:
    description:
      - Where to write the deploy's outcome as JUnit XML for a CI system's test view (GitLab C(reports.junit), Azure
        C(PublishTestResults), a GitHub job summary), rewritten at the end of each deploy run.
      - One test case per host and phase (C(preflight), C(release), C(activate), C(verify), C(commit), ...) that the
        host ran, and one per host for its rollback; a failed case holds the failure's cause, evidence, task and
        message, from the incident report. A deploy that ended without an incident has passing cases only.
      - Unset (the default) writes no JUnit file.
    type: path
    env:
      - name: FAILSAFE_JUNIT_FILE
    ini:
      - section: failsafe_auto_rollback
        key: junit_file
  webhook_url:
    description:
      - URL that receives every alert as a JSON POST. A secret; it is never printed or written anywhere.
      - When not set the webhook channel is off.
    type: str
    env:
      - name: FAILSAFE_WEBHOOK_URL
    ini:
      - section: failsafe_auto_rollback
        key: webhook_url
  webhook_timeout:
    description: Seconds per webhook attempt.
    type: float
    default: 5
    env:
      - name: FAILSAFE_WEBHOOK_TIMEOUT
    ini:
      - section: failsafe_auto_rollback
        key: webhook_timeout
  webhook_retries:
    description:
      - Further attempts after a failed webhook POST (connection error, timeout, HTTP 5xx or 429), with
        exponential backoff.
    type: int
    default: 2
    env:
      - name: FAILSAFE_WEBHOOK_RETRIES
    ini:
      - section: failsafe_auto_rollback
        key: webhook_retries
  webhook_time_limit:
    description:
      - Seconds the webhook may spend sending, over the whole run (attempts and the pauses between them). A webhook
        that never answers costs the run at most this long; what it did not receive stays in the spool for the
        replay command.
    type: float
    default: 8
    env:
      - name: FAILSAFE_WEBHOOK_TIME_LIMIT
    ini:
      - section: failsafe_auto_rollback
        key: webhook_time_limit
  alert_wait_limit:
    description:
      - The total time limit of the channels, that is the most seconds the run waits at its end for the webhook and
        every channel together. They send from threads of their own, side by side, and never delay the rollback
        (an alert is spooled and queued, and the rollback starts at once). At the run's end the callback waits until
        each is done or out of its own time limit (O(webhook_time_limit), O(channel_time_limit)), or until this
        limit, whichever comes first. What was not delivered is in the spool; a warning names the channel.
    type: float
    default: 10
    env:
      - name: FAILSAFE_ALERT_WAIT_LIMIT
    ini:
      - section: failsafe_auto_rollback
        key: alert_wait_limit
  pagerduty_routing_key:
    description:
      - Integration (routing) key of a PagerDuty service using the Events API v2. When set, C(deploy_failed)
        triggers an incident (severity error) under one dedup key per deployment, release and run,
        C(rolled_back) resolves it, C(rollback_failed) re-triggers it as critical, and every deploy that ends
        (committed, rolled back or failed) is recorded as a change event.
      - A secret; it is never printed or written anywhere. Set it through the environment only.
      - When not set the PagerDuty channel is off.
    type: str
    env:
      - name: FAILSAFE_PAGERDUTY_ROUTING_KEY
  pagerduty_url:
    description: Base URL of the PagerDuty Events API (C(/v2/enqueue) and C(/v2/change/enqueue) are added).
    type: str
    default: https://events.pagerduty.com
    env:
      - name: FAILSAFE_PAGERDUTY_URL
    ini:
      - section: failsafe_auto_rollback
        key: pagerduty_url
  slack_webhook_url:
    description:
      - Slack incoming webhook URL. Every alert is posted as a Block Kit message kept within Slack's limits
        (50 blocks, 3,000 characters a section); long host lists end with C(... and N more hosts).
      - A secret; it is never printed or written anywhere. Set it through the environment only.
      - When not set the Slack channel is off.
    type: str
    env:
      - name: FAILSAFE_SLACK_WEBHOOK_URL
  teams_webhook_url:
    description:
      - Microsoft Teams Workflows webhook URL (the retired Office 365 connectors are not supported). Every alert is
        posted as an Adaptive Card 1.4 kept under 28 KB.
      - A secret; it is never printed or written anywhere. Set it through the environment only.
      - When not set the Teams channel is off.
    type: str
    env:
      - name: FAILSAFE_TEAMS_WEBHOOK_URL
  channel_timeout:
    description: Seconds per request of the PagerDuty, Slack and Teams channels.
    type: float
    default: 1
    env:
      - name: FAILSAFE_CHANNEL_TIMEOUT
    ini:
      - section: failsafe_auto_rollback
        key: channel_timeout
  channel_retries:
    description:
      - Further attempts of a PagerDuty, Slack or Teams request after a connection error, a timeout, HTTP 429 or
        5xx, with exponential backoff. Other answers (such as HTTP 400) are not retried.
    type: int
    default: 2
    env:
      - name: FAILSAFE_CHANNEL_RETRIES
    ini:
      - section: failsafe_auto_rollback
        key: channel_retries
  channel_time_limit:
    description:
      - Seconds each of the PagerDuty, Slack and Teams channels may spend sending, over the whole run. The
        channels send from threads of their own, side by side, so the run waits for them at most this long at its
        end (and never longer than O(alert_wait_limit)); what a channel could not send is still in the spool, and a
        warning names the channel.
    type: float
    default: 3
    env:
      - name: FAILSAFE_CHANNEL_TIME_LIMIT
    ini:
      - section: failsafe_auto_rollback
        key: channel_time_limit
  email_host:
    description:
      - SMTP server that sends every alert as an email (smtplib on the controller). The subject names the event,
        the release and the hosts; the body is plain text with an HTML alternative (O(email_html)).
      - When not set the email channel is off. O(email_from) and O(email_to) are needed too.
    type: str
    env:
      - name: FAILSAFE_EMAIL_HOST
    ini:
      - section: failsafe_auto_rollback
        key: email_host
  email_port:
    description: Port of the SMTP server (submission with STARTTLS).
    type: int
    default: 587
    env:
      - name: FAILSAFE_EMAIL_PORT
    ini:
      - section: failsafe_auto_rollback
        key: email_port
  email_from:
    description: Sender address of the alert emails.
    type: str
    env:
      - name: FAILSAFE_EMAIL_FROM
    ini:
      - section: failsafe_auto_rollback
        key: email_from
  email_to:
    description: Recipients of the alert emails (a comma-separated list in the environment or C(ansible.cfg)).
    type: list
    elements: str
    env:
      - name: FAILSAFE_EMAIL_TO
    ini:
      - section: failsafe_auto_rollback
        key: email_to
  email_username:
    description:
      - User name for SMTP AUTH. When not set, no AUTH. The password is only ever sent after STARTTLS (or to
        C(localhost)).
    type: str
    env:
      - name: FAILSAFE_EMAIL_USERNAME
    ini:
      - section: failsafe_auto_rollback
        key: email_username
  email_password:
    description:
      - Password for SMTP AUTH. A secret; it is never printed or written anywhere. Set it through the environment
        only.
    type: str
    env:
      - name: FAILSAFE_EMAIL_PASSWORD
  email_starttls:
    description:
      - Upgrade the SMTP session with STARTTLS, verifying the server's certificate and host name, before AUTH and
        before the message. A server that does not offer STARTTLS gets no message.
    type: bool
    default: true
    env:
      - name: FAILSAFE_EMAIL_STARTTLS
    ini:
      - section: failsafe_auto_rollback
        key: email_starttls
  email_ca_file:
    description: CA bundle (PEM) that verifies the SMTP server's certificate; the system's CAs when not set.
    type: path
    env:
      - name: FAILSAFE_EMAIL_CA_FILE
    ini:
      - section: failsafe_auto_rollback
        key: email_ca_file
  email_timeout:
    description:
      - Seconds one SMTP session may take. The email channel also keeps to O(channel_retries) and
        O(channel_time_limit).
    type: float
    default: 2
    env:
      - name: FAILSAFE_EMAIL_TIMEOUT
    ini:
      - section: failsafe_auto_rollback
        key: email_timeout
  email_html:
    description: Add an HTML alternative to the plain-text body of the alert emails.
    type: bool
    default: true
    env:
      - name: FAILSAFE_EMAIL_HTML
    ini:
      - section: failsafe_auto_rollback
        key: email_html
  apprise_urls:
    description:
      - Apprise URLs (separated by spaces or new lines) that receive every alert as a title and a plain-text body,
        for any of the services Apprise supports. Needs the optional C(apprise) Python package on the controller;
        without it the channel is off with one warning.
      - A secret (the URLs hold tokens); it is never printed or written anywhere. Set it through the environment
        only.
      - When not set the Apprise channel is off.
    type: str
    env:
      - name: FAILSAFE_APPRISE_URLS
  dependencies:
    description:
      - The deployment's dependencies, probed from the controller at the moment of the first counted failure, all
        side by side, each within O(dependency_timeout). The C(deploy_failed) alert and the incident report (JSON,
        Markdown and HTML) then answer "was it us or a dependency?", naming each dependency that was down.
      - "Each entry is C([name=]kind:target), one of C(tcp:HOST:PORT) (a connection opens), C(http:URL) or the
        bare C(http://) or C(https://) URL (a GET answers below HTTP 400), C(dns:NAME) (the name resolves),
        C(disk:/PATH:MIN_FREE) (at least MIN_FREE free, such as C(500M), C(2G) or C(10%)) and C(command:COMMAND)
        (split like a shell would, run without one, exits 0)."
      - "Example: C(db=tcp:db.example.org:5432, cache=tcp:10.0.0.7:6379, api=https://api.example.org/health,
        dns:db.example.org, disk:/var:1G)."
      - An entry that cannot be understood is left out with a warning. A URL's password and query are kept out of
        the report and alerts.
    type: list
    elements: str
    default: []
    env:
      - name: FAILSAFE_DEPENDENCIES
    ini:
      - section: failsafe_auto_rollback
        key: dependencies
  dependency_timeout:
    description:
      - Seconds each dependency probe may take. The probes run side by side, so they hold up the run at most this
        long (plus half a second), once, at the first counted failure.
    type: float
    default: 2
    env:
      - name: FAILSAFE_DEPENDENCY_TIMEOUT
    ini:
      - section: failsafe_auto_rollback
        key: dependency_timeout
  stakeholder_email_to:
    description:
      - Recipients of the stakeholder notices (a comma-separated list in the environment or C(ansible.cfg)), sent by
        email through the SMTP server of the email channel (O(email_host), O(email_from), O(email_port),
        O(email_username), O(email_password), O(email_starttls), O(email_ca_file)), whether or not O(email_to) is
        set.
      - Stakeholders get plain words, never the alerts' details, in up to three notices per run, in order; when the
        first host opens its transaction (a release is being deployed), at the first counted failure (a problem,
        the previous version is being put back), and when the run ends (service restored, with the time and how
        long the impact lasted; or not yet restored; or the release is live).
      - The notices are written only from the service name, the releases, times and durations, never from a task's
        output, so no error text, host name or secret reaches them. No notice in check mode.
    type: list
    elements: str
    env:
      - name: FAILSAFE_STAKEHOLDER_EMAIL_TO
    ini:
      - section: failsafe_auto_rollback
        key: stakeholder_email_to
  stakeholder_slack_webhook_url:
    description:
      - Slack incoming webhook URL of the stakeholders' channel, which gets the same plain-words notices as
        O(stakeholder_email_to) (never the alerts).
      - A secret; it is never printed or written anywhere. Set it through the environment only.
    type: str
    env:
      - name: FAILSAFE_STAKEHOLDER_SLACK_WEBHOOK_URL
  stakeholder_templates:
    description:
      - Directory whose C(started.txt), C(failed.txt), C(restored.txt), C(not_restored.txt) and C(completed.txt)
        replace the built-in stakeholder notices (each file that exists). The first line is the subject. Python
        C(string.Template) placeholders; C($service), C($release), C($previous), C($started_at), C($failed_at),
        C($restored_at), C($impact) and C($incident).
    type: path
    env:
      - name: FAILSAFE_STAKEHOLDER_TEMPLATES
    ini:
      - section: failsafe_auto_rollback
        key: stakeholder_templates
  service_name:
    description:
      - The service as stakeholders know it, in the notices. Defaults to the deployment's name (C(failsafe_name)
        of the first host that opened a transaction).
    type: str
    env:
      - name: FAILSAFE_SERVICE_NAME
    ini:
      - section: failsafe_auto_rollback
        key: service_name
  spool_path:
    description:
      - File that every alert is appended to as one JSON line (fsynced).
      - Defaults to C(<report_dir>/alerts.jsonl).
      - What each channel did with each alert is appended beside it, to C(alerts.delivery.jsonl); the replay
        command sends again what a channel never received (see the collection's C(docs/callback.md)).
    type: path
    env:
      - name: FAILSAFE_SPOOL_PATH
    ini:
      - section: failsafe_auto_rollback
        key: spool_path
  defer_to_workflow:
    description:
      - When true and the run is an AWX/Automation Controller job (E(JOB_ID) or the C(awx_job_id) extra var is
        set), do not start the rollback; alert and report only, and leave the rollback to the workflow's failure
        path (a job template running C(failsafe.deploy.rollback) with the artifacts the deploy published through
        C(set_stats), namely C(failsafe_rollback_run_id), C(failsafe_deploy_release) and
        C(failsafe_deploy_previous_releases)).
      - The default is false because a failure node runs only if someone built that workflow; deferring when it
        does not exist (the job template launched alone, or a workflow without a failure path) would leave the
        hosts broken.
    type: bool
    default: false
    env:
      - name: FAILSAFE_DEFER_TO_WORKFLOW
    ini:
      - section: failsafe_auto_rollback
        key: defer_to_workflow
  rollback_via:
    description:
      - How the rollback is run.
      - V(local) starts the rollback playbook as a child C(ansible-playbook) of this run.
      - V(controller) launches the job template O(controller_rollback_template) on the AWX / Automation Controller
        O(controller_host) over its REST API, with the rollback variables as extra vars and the hosts in scope as
        limit, and waits up to O(rollback_timeout) seconds for it (then cancels it and reports ROLLBACK FAILED).
        The job template must prompt on launch for variables and limit.
    type: str
    choices: [local, controller]
    default: local
    env:
      - name: FAILSAFE_ROLLBACK_VIA
    ini:
      - section: failsafe_auto_rollback
        key: rollback_via
  controller_host:
    description: Base URL of the AWX / Automation Controller, for O(rollback_via=controller).
    type: str
    env:
      - name: FAILSAFE_CONTROLLER_HOST
    ini:
      - section: failsafe_auto_rollback
        key: controller_host
  controller_token:
    description:
      - OAuth2 token sent in the C(Authorization) header as a bearer token, for O(rollback_via=controller).
      - A secret; it is never printed or written anywhere. Inject it through the environment, e.g. from an AWX
        credential type.
    type: str
    env:
      - name: FAILSAFE_CONTROLLER_TOKEN
  controller_rollback_template:
    description: Id or name of the rollback job template, for O(rollback_via=controller).
    type: str
    env:
      - name: FAILSAFE_CONTROLLER_ROLLBACK_TEMPLATE
    ini:
      - section: failsafe_auto_rollback
        key: controller_rollback_template
  controller_api_path:
    description:
      - API root of the controller. V(v2) is C(/api/v2/), V(controller) is C(/api/controller/v2/) (platforms
        behind the gateway), V(auto) tries C(/api/v2/) and falls back to C(/api/controller/v2/) on HTTP 404.
    type: str
    choices: [auto, v2, controller]
    default: auto
    env:
      - name: FAILSAFE_CONTROLLER_API_PATH
    ini:
      - section: failsafe_auto_rollback
        key: controller_api_path
  controller_verify_ssl:
    description: Verify the controller's TLS certificate.
    type: bool
    default: true
    env:
      - name: FAILSAFE_CONTROLLER_VERIFY_SSL
    ini:
      - section: failsafe_auto_rollback
        key: controller_verify_ssl
  controller_poll_interval:
    description: Seconds between two polls of the rollback job's status.
    type: float
    default: 2
    env:
      - name: FAILSAFE_CONTROLLER_POLL_INTERVAL
    ini:
      - section: failsafe_auto_rollback
        key: controller_poll_interval
  ansible_playbook:
    description:
      - The C(ansible-playbook) executable that runs the rollback.
      - Defaults to the one beside the running Python interpreter, else C(ansible-playbook) from E(PATH).
    type: path
    env:
      - name: FAILSAFE_ANSIBLE_PLAYBOOK
    ini:
      - section: failsafe_auto_rollback
        key: ansible_playbook
  rollback_on_interrupt:
    description:
      - When C(ansible-playbook) is stopped by SIGINT (Ctrl-C) or SIGTERM while hosts have an open transaction,
        roll back at exit, before the process ends, like after a failure (scope as O(rollback_scope), plus every
        host whose transaction is still open).
      - When false the callback only alerts and reports ROLLBACK NOT STARTED; the next deploy or
        C(failsafe.deploy.recover) rolls back.
    type: bool
    default: true
    env:
      - name: FAILSAFE_ROLLBACK_ON_INTERRUPT
    ini:
      - section: failsafe_auto_rollback
        key: rollback_on_interrupt
  redact_values:
    description: Further secret values that must never appear in alerts, reports or logs.
    type: list
    elements: str
    default: []
    env:
      - name: FAILSAFE_REDACT_VALUES
    ini:
      - section: failsafe_auto_rollback
        key: redact_values
  gc_freeze:
    description:
      - Before C(ansible-playbook) forks a worker (one per task and host), collect garbage and freeze the garbage
        collector's objects (Python's C(gc.freeze())). A worker's collections then skip the playbooks, roles and
        variables it inherited instead of walking them, which also made the kernel copy the memory they live on. A
        deploy uses less controller CPU (C(make bench), part C(gc_freeze)); nothing else changes.
      - Objects that are garbage at a fork are freed first; a reference cycle that becomes garbage later stays until
        the process ends. Set false to leave Python's collector as it is.
      - Applies while the callback is enabled, in the rollback child too.
    type: bool
    default: true
    env:
      - name: FAILSAFE_GC_FREEZE
    ini:
      - section: failsafe_auto_rollback
        key: gc_freeze
  payload_cache:
    description:
      - Keep the payloads that ansible-core builds for this collection's modules (the zip of a module and the
        module_utils it imports) between runs, in O(payload_cache_dir). ansible-core builds each payload once per
        run and removes it at the run's end; with this on, a run copies the payloads an earlier run built into its
        own cache at playbook start instead of parsing the same files again (about 0.3 CPU-s of each run for the
        transaction module; C(make bench), part C(payload_cache)).
      - An entry is used only while ansible-core (its version, install path and module_utils) and this
        collection's modules, module_utils and routing are unchanged; any change builds the payload again. Payloads
        built with a debugger or coverage extension are not kept.
      - Applies while the callback is enabled, in the rollback child too. Set false to let ansible-core build every
        payload in every run.
    type: bool
    default: true
    env:
      - name: FAILSAFE_PAYLOAD_CACHE
    ini:
      - section: failsafe_auto_rollback
        key: payload_cache
  payload_cache_dir:
    description:
      - The directory of O(payload_cache), an absolute path (C(~) is expanded). Its entries are code that runs on
        the managed hosts, so it is used only when the user running C(ansible-playbook) owns it and no one else can
        write to it (it is made with mode 0700 when missing); otherwise every payload is built as usual.
      - Each version of the code gets a subdirectory named after its key (32 hexadecimal digits); only the 8 used
        last are kept, and nothing else in the directory is touched.
      - Not set, C($XDG_CACHE_HOME/failsafe-deploy/payloads), or C(~/.cache/failsafe-deploy/payloads).
    type: str
    env:
      - name: FAILSAFE_PAYLOAD_CACHE_DIR
    ini:
      - section: failsafe_auto_rollback
        key: payload_cache_dir
notes:
  - The rollback child cannot answer interactive prompts (C(--ask-pass), C(--ask-become-pass),
    C(--ask-vault-pass)); use password files or vault IDs, which are passed through.
  - ansible-playbook runs no callback event after SIGINT and dies at once on SIGTERM. At playbook start the
    callback arms handlers for both (SIGTERM then ends the run like SIGINT, exit code 99) and rolls back at exit
    (O(rollback_on_interrupt)). One more signal during that rollback prints a warning; a second one aborts it.
  - At playbook start the callback exports its process id as E(FAILSAFE_CONTROLLER_PID); the preflight role records
    it in the deploy lock, so that a later run on the same controller sees at once that a SIGKILLed run is gone
    and recovers its open transactions (otherwise only after the lock's TTL).
'''

EXAMPLES = r'''
# ansible.cfg
# [defaults]
# callbacks_enabled = failsafe.deploy.auto_rollback
#
# [failsafe_auto_rollback]
# rollback_scope = opened
# report_dir = /var/log/failsafe-incidents
#
# The webhook URL is a secret: inject it through the environment, e.g. from an AWX credential type.
# FAILSAFE_WEBHOOK_URL=https://hooks.example.com/services/T000/B000/XXXX ansible-playbook failsafe.deploy.deploy
#
# PagerDuty, Slack and Teams: secrets too, so through the environment.
# FAILSAFE_PAGERDUTY_ROUTING_KEY=R0123456789abcdef0123456789abcdef \
# FAILSAFE_SLACK_WEBHOOK_URL=https://hooks.slack.com/services/T000/B000/XXXX \
# FAILSAFE_TEAMS_WEBHOOK_URL='https://prod-00.westeurope.logic.azure.com/workflows/...&sig=XXXX' \
#   ansible-playbook failsafe.deploy.deploy -e release_version=1.4.2
'''

import atexit
import os
import sys
import time

from ansible import constants as C
from ansible import context
from ansible.plugins.callback import CallbackBase

from ansible_collections.failsafe.deploy.plugins.plugin_utils import (
    _alerts, _controller, _events, _forks, _junit, _launcher, _notices, _outcome, _payload_cache, _probes, _settings, _summary)
from ansible_collections.failsafe.deploy.plugins.plugin_utils._classify import (
    enclosing_blocks, first_line, guarding_blocks, rescue_owner)
from ansible_collections.failsafe.deploy.plugins.plugin_utils._incident import (
    DeployRun, Timeline, build_incident, new_incident_id, report_paths, write_json_atomic, write_report)
from ansible_collections.failsafe.deploy.plugins.plugin_utils._redact import Redactor

_WARNED_ONCE = set()


class CallbackModule(CallbackBase):
    """Adapter between ansible's events and the failsafe incident library (plugins/plugin_utils): it captures the
    events and delegates reading them (_events), deciding the scope and outcome (_outcome), launching (_launcher,
    _controller), merging results (_launcher) and building the incident (_incident)."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'failsafe.deploy.auto_rollback'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None, options=None):
        self._ready = False
        self.enabled = True
        self.child_mode = os.environ.get(_launcher.CHILD_ENV) == '1'
        self.child_result_path = os.environ.get(_launcher.RESULT_ENV) if self.child_mode else None
        self.redactor = Redactor()
        self.timeline = Timeline()
        self.run = DeployRun(self.redactor, self.timeline)
        self.child_report = _launcher.ChildReport(self.redactor)
        self.alerts = self.incident_id = self.playbook_path = self.awx_job_id = self.payload_cache = None
        # The play running now and the connection keywords it sets; per host, those of the play that opened its
        # transaction (the rollback reaches the host the same way).
        self.play = None
        self.play_connection, self.connections, self.layer_stages, self.ladder = {}, {}, {}, {}
        self.finished, self.outcome, self._refused = False, None, []
        # Hosts that reverted a transaction by themselves (commit confirmed), as the next run's open or query found
        # them: {host: the facts the host kept}.
        self.self_reverted = {}
        self._atexit_registered = False
        self._notices_sent = []
        self.dependencies, self.dependency_probes = [], None
        # the rollback of this run, once launched: its files, playbook, command and per-host outcome
        self._rollback_files = {}
        self._rollback_playbook_used = self._rollback_command = self._rollback_hosts = None
        self._left_by_scope = []
        self.report_json = self.report_md = self.report_html = None
        self._signals = _launcher.SignalGuard(on_signal=self._on_interrupt)
        super(CallbackModule, self).__init__(display=display, options=options)

    # options --------------------------------------------------------------------------------------------------
    def set_options(self, task_keys=None, var_options=None, direct=None):
        super(CallbackModule, self).set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        option = self.get_option
        self.enabled = bool(option('enabled'))
        self.rollback_playbook = option('rollback_playbook') or 'failsafe.deploy.rollback'
        self.rollback_scope = option('rollback_scope') or 'opened'
        self.rollback_timeout = int(option('rollback_timeout') or 900)
        self.report_dir = _settings.path_option(option('report_dir') or './failsafe-incidents')
        self.junit_file = _settings.path_option(option('junit_file'))
        self.webhook_url = option('webhook_url') or None
        self.spool_path = _settings.path_option(option('spool_path')) or os.path.join(self.report_dir, 'alerts.jsonl')
        self.defer_to_workflow = bool(option('defer_to_workflow'))
        self.rollback_via = option('rollback_via') or 'local'
        self.rollback_on_interrupt = option('rollback_on_interrupt') is not False
        self.ansible_playbook = option('ansible_playbook') or _launcher.default_ansible_playbook()
        _settings.add_secrets(self.redactor, option)
        self.alerts = _settings.alert_dispatcher(option, self.redactor, self.spool_path, self.child_mode,
                                                 self._warn_once)
        self.service_name = option('service_name') or None
        self.notice_templates = _notices.load_templates(option('stakeholder_templates'))
        self._notices_sent = []
        self.dependencies = _settings.dependencies(option, self.redactor, self._warn_once)
        self.dependency_timeout = _settings.float_option(option('dependency_timeout'), _probes.DEFAULT_TIMEOUT)
        self.dependency_probes = None
        _forks.freeze_before_forks(self.enabled and option('gc_freeze') is not False)
        self.payload_cache = _payload_cache.for_run(self.enabled and option('payload_cache') is not False,
                                                    option('payload_cache_dir'))
        if self.enabled and not self.child_mode and not self._atexit_registered:
            atexit.register(self._at_exit)
            self._atexit_registered = True
        self._ready = True

    # plumbing -------------------------------------------------------------------------------------------------
    def _active(self):
        return self._ready and self.enabled and not self.finished

    def _warn_once(self, msg):
        """A setting that cannot work is said once per process, however often the options are set."""
        if msg not in _WARNED_ONCE:
            _WARNED_ONCE.add(msg)
            self._warn(msg)

    def _warn(self, msg):
        try:
            self._display.warning('failsafe.deploy.auto_rollback: %s' % self.redactor.text(msg))
        except Exception:  # pylint: disable=broad-except
            pass

    def _guard(self, what, func, *args, **kwargs):
        """Run one event handler; turn any error into a warning (a callback must never break the run)."""
        if not self._active():
            return None
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            self._warn('error while handling %s (ignored): %s: %s' % (what, type(exc).__name__, exc))
            return None
        finally:
            self._report_alert_problems()

    def _report_alert_problems(self, final=False):
        """Warn about each alert a sender failed to deliver and, at the run's end (``final``), what one still had."""
        if self.alerts is not None:
            for line in _settings.alert_warnings(self.alerts, self.spool_path, final):
                self._warn(line)

    # events ---------------------------------------------------------------------------------------------------
    def v2_playbook_on_start(self, playbook):
        self._guard('playbook start', self._on_playbook_start, playbook)

    def _on_playbook_start(self, playbook):
        name = getattr(playbook, '_file_name', None)
        self.playbook_path = os.path.abspath(name) if name else None
        self.timeline.add('playbook_start', playbook=self.playbook_path, child_mode=self.child_mode or None)
        os.environ[_launcher.CONTROLLER_PID_ENV] = str(os.getpid())
        if not self.child_mode:
            self._signals.arm()
        _payload_cache.call(self.payload_cache, 'prime', self._warn_once)

    def _on_interrupt(self, name):
        """Called from the signal handler: no Display, no locks."""
        self.timeline.add('interrupted', signal=name)

    def v2_playbook_on_play_start(self, play):
        self._guard('play start', self._on_play_start, play)

    def _on_play_start(self, play):
        self.timeline.add('play_start', play=self.redactor.text(play.get_name() if hasattr(play, 'get_name')
                                                                else str(play)))
        self.play = play
        self.play_connection = _launcher.play_connection(play)
        if self.awx_job_id is None:
            self.awx_job_id = _events.awx_job_id(play)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._guard('task start', self._on_task_start, task)

    def v2_playbook_on_handler_task_start(self, task):
        self._guard('handler start', self._on_task_start, task, True)

    def _on_task_start(self, task, handler=False):
        _payload_cache.call(self.payload_cache, 'save', self._warn_once)
        info = _events.task_info(task)
        self.run.note_task_start(info.get('uuid'))
        self.timeline.add('handler_start' if handler else 'task_start', task=self.redactor.text(info['name']),
                          role=info.get('role'), path=info.get('path'))

    def v2_runner_on_ok(self, result):
        self._guard('ok result', self._on_ok, result)

    def _on_ok(self, result, status=None):
        host, task, data = _events.result_parts(result)
        info = _events.task_info(task)
        status = status or ('changed' if data.get('changed') else 'ok')
        self.timeline.add('result', host=host, task=self.redactor.text(info['name']), status=status)
        owner = rescue_owner(task)
        if owner is not None:
            self.run.mark_rescued(host, 'rescue section ran', block_uuid=owner)
        if self.child_mode:
            self.child_report.on_result(host, data, 'ok', task_name=info['name'])
            return
        if isinstance(data.get('self_reverted'), dict) and host not in self.self_reverted:
            # a host rolled back a transaction by itself because nobody confirmed it in time: an incident
            facts = self.self_reverted[host] = self.redactor.data(data['self_reverted'])
            self.timeline.add('self_reverted', host=host, **_events.self_revert_event(facts))
            self._warn(_summary.self_revert_warning(host, facts))
        # a task delegated to another host (a load balancer's traffic layer, from the app hosts' play) changed that
        # host's transaction, which names it (the transaction module's inventory_host): it is that host's to roll back
        for txn in _events.transactions(data):
            txn_host = _events.owner(txn, host)
            if self.run.observe_transaction(txn_host, txn) == 'opened':
                self.connections[txn_host] = _events.opened_connection(result, host, txn_host, self.play,
                                                                       self.play_connection, self._warn)
                self._notice('started')
        steps = _events.ladder_steps(data)
        if steps:
            # a step of the escalation ladder (verify role): kill switch, traffic back, full rollback
            self.ladder[host] = steps
            self.timeline.add('ladder', host=host, **_events.ladder_event(steps[-1], self.redactor.text))
        # the rollback stages (flags, traffic, code, database) this host's layers need: the child undoes each stage
        # on every host before the next
        self.layer_stages.update(_events.layer_stages(data, host))

    def v2_runner_on_skipped(self, result):
        self._guard('skipped result', self._on_ok, result, 'skipped')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._guard('failed result', self._on_failed, result, ignore_errors)

    def v2_runner_on_unreachable(self, result):
        self._guard('unreachable result', self._on_unreachable, result)

    def _on_unreachable(self, result):
        self._on_failed(result, False, unreachable=True)

    def _on_failed(self, result, ignore_errors, unreachable=False):
        host, task, data = _events.result_parts(result)
        if getattr(task, 'ignore_unreachable', False) if unreachable else (
                ignore_errors or getattr(task, 'ignore_errors', False)):
            self.timeline.add('result', host=host, task=self.redactor.text(_events.task_info(task)['name']),
                              status='ignored')
            return
        self._failure(host, task, data, unreachable=unreachable)

    def _failure(self, host, task, data, unreachable):
        info = _events.task_info(task)
        censored = _events.censored(task, data)
        guards = [] if unreachable else guarding_blocks(task)
        if self.child_mode:
            if not guards:
                self.child_report.on_result(host, data, 'unreachable' if unreachable else 'failed',
                                            task_name=info['name'],
                                            message='output hidden (no_log)' if censored
                                            else self.redactor.text(first_line(data)))
            self.timeline.add('result', host=host, task=info['name'], status='unreachable' if unreachable else 'failed')
            return
        failure = self.run.record_failure(host, info, data, unreachable=unreachable, guards=guards,
                                          blocks=enclosing_blocks(task), censored=censored,
                                          open_failed=_events.opens_transaction(task))
        if failure['in_scope'] and not failure['rescued'] and failure['first_for_host']:
            self._ensure_incident()
            self._probe_dependencies()
            self._alert('deploy_failed', 'error', failure=failure)
            self._notice('failed')

    def _probe_dependencies(self):
        """Probe the listed dependencies once, at the first counted failure (side by side, bounded)."""
        if self.dependency_probes is not None or not self.dependencies:
            return
        self.dependency_probes, answer = _probes.probe_at_failure(self.dependencies, self.dependency_timeout,
                                                                  self.redactor, self.timeline)
        if answer['down']:
            self._warn(answer['text'])

    def _notice(self, kind, restored=None):
        """Send the stakeholder notice ``kind`` once per run (plain words from a few facts, see _notices.py)."""
        if self.alerts is None:
            return
        audience = [name for name in ('stakeholders', 'stakeholders_slack') if self.alerts.has_channel(name)]
        if kind in self._notices_sent or not audience or context.CLIARGS.get('check'):
            return
        self._notices_sent.append(kind)
        facts = _notices.run_facts(self.run, service=self.service_name, playbook=self.playbook_path,
                                   restored=restored, incident_id=self.incident_id, report_dir=self.report_dir)
        self.alerts.notify(self.redactor.data(_notices.notice_payload(kind, facts, self.notice_templates)),
                           only=audience)
        self.timeline.add('stakeholder_notice', notice=kind)

    def _dependency_answer(self):
        if self.dependency_probes is None:
            return None
        return self.redactor.data(_probes.verdict(self.dependency_probes))

    def v2_playbook_on_stats(self, stats):
        if not self._ready or not self.enabled or self.finished:
            return
        _payload_cache.call(self.payload_cache, 'save', self._warn_once)
        try:
            if self.child_mode:
                if self.child_result_path:
                    write_json_atomic(self.child_result_path, self.child_report.finish(stats))
            else:
                self._finish(stats)
        except Exception as exc:  # pylint: disable=broad-except
            self._warn('error while finishing the run (ignored): %s: %s' % (type(exc).__name__, exc))
            if not self.child_mode and self.run.needs_rollback() and self.outcome is None:
                self._banner_failed('internal error of the auto_rollback callback: %s' % exc)
        finally:
            self.finished = True
            self._report_alert_problems(final=True)

    # parent: incident -----------------------------------------------------------------------------------------
    def _ensure_incident(self):
        if self.incident_id is None:
            self.incident_id = new_incident_id()
            self.timeline.add('incident_opened', incident_id=self.incident_id)
        return self.incident_id

    def _alert(self, event, severity, failure=None, **extra):
        payload = _alerts.alert_payload(event, severity, self.run, self.incident_id, self.playbook_path,
                                        failure=failure, was_it_us=self._dependency_answer())
        payload.update(extra)
        payload = self.redactor.data(payload)
        record = self.alerts.send(payload)
        self.timeline.add('alert', alert=event, host=payload.get('host'), spool=record.get('spool'),
                          webhook=record.get('webhook'))
        return record

    def _notify_committed(self):
        """A deploy that ended without a failure: a change event for the channels that record deploys (PagerDuty)
        and the stakeholders' notice that the release is live. Not an alert, so not spooled."""
        if not self.alerts.channels:
            return
        payload = _alerts.alert_payload('deploy_committed', 'info', self.run, self.incident_id, self.playbook_path)
        payload.update(hosts=list(self.run.opened_order), outcome='committed', summary='deploy of %s committed on %s'
                       % (', '.join(self.run.releases) or 'a release', ', '.join(self.run.opened_order)))
        self.alerts.notify(self.redactor.data(payload))
        self._notice('completed', restored=time.time())
        self.alerts.flush()
        self._report_alert_problems()

    def _finish(self, stats, interrupted=None):
        """Roll back if needed. ``interrupted`` (exit handler, no play recap): why the run ended early."""
        if stats is not None:
            self.run.reconcile(getattr(stats, 'failures', {}), getattr(stats, 'dark', {}),
                               getattr(stats, 'rescued', {}))
        if not self.run.needs_rollback() and not interrupted:
            end = _outcome.quiet_end(self.run, self.ladder, self.incident_id is not None, self.self_reverted)
            if end['linked'] and self.incident_id is None:  # a host alerted its own revert: this is that incident
                self.incident_id = end['linked']
            if end['outcome'] is not None:
                self._ensure_incident()
                self.outcome = end['outcome']
                self._refused = end['failures'] or []
                for event, alert in (('failure_rescued', end['alert']), ('self_reverted', end['unheard'])):
                    if alert is not None:
                        self._alert(event, alert[0], **alert[1])
                self.alerts.flush()
                self._write_incident(None, [], reason=end['reason'], failures=end['failures'])
                self._summary_line()
            if end['committed']:
                self._display.display('failsafe auto_rollback: %d host(s) opened a transaction; no failure, no '
                                      'rollback needed.' % len(self.run.opened_order))
                _junit.write_or_warn(self.junit_file, {'outcome': 'committed', 'timeline': self.timeline.to_list(),
                                                       'summary': {'releases': self.run.releases}}, self._warn)
                self._notify_committed()
            return
        self._ensure_incident()
        if self.run.counted_failures and not any(
                (a or {}).get('event') == 'deploy_failed' for a in (self.alerts.records if self.alerts else [])):
            # a failure that only counted once another host had opened its transaction (an open refused or cut
            # short on one host while the others opened): it is alerted now
            self._alert('deploy_failed', 'error', failure=self.run.counted_failures[0])
        scope, what = _outcome.rollback_scope(self.run, self.rollback_scope, interrupted)
        if interrupted:
            self._alert('deploy_interrupted', 'error', hosts=scope, reason=interrupted,
                        summary='%s with open transactions on %s' % (what, ', '.join(scope)))
        launch = None
        hosts = {}
        self.outcome, reason = _outcome.not_launched(context.CLIARGS.get('check'), self.defer_to_workflow,
                                                     os.environ.get('JOB_ID') or self.awx_job_id)
        if self.outcome is None:
            if self.rollback_via == 'controller':
                launch, hosts, reason = self._run_rollback_controller(scope)
            else:
                launch, hosts, reason = self._run_rollback(scope, context.CLIARGS)
            self.outcome = _outcome.launched(reason)
        self._rollback_hosts = hosts
        report = report_paths(self.report_dir, self.incident_id)
        # rollback_scope=failed: hosts that opened (or even committed) this run stay on its release. Say so.
        self._left_by_scope, what = _outcome.left_by_scope(self.run, scope, self.rollback_scope, what)
        if self._left_by_scope:
            self._warn(what)
        event, severity, fields, likely = _outcome.outcome_alert(self.outcome, what, scope, hosts, reason, launch,
                                                                 self.run.counted_failures, report)
        self._alert(event, severity, **fields)
        if self.outcome == 'rolled_back':
            self._notice('restored', restored=launch.ended if launch else time.time())
        elif self.outcome == 'rollback_failed':
            self._notice('not_restored')
            if likely:
                self._warn(likely)
        self.alerts.flush()
        self._report_alert_problems()
        self._write_incident(launch, scope, reason=reason or (what if interrupted else None), hosts=hosts)
        if self.outcome == 'rollback_failed':
            self._banner_failed(reason, _launcher.way_out(scope, hosts, self._rollback_request, context.CLIARGS))
        self._summary_line()

    def _rollback_start(self, scope, playbook):
        self.timeline.add('rollback_start', hosts=scope, playbook=playbook)
        self._display.display('failsafe auto_rollback: rolling back %s with %s (timeout %d s)'
                              % (', '.join(scope), playbook, self.rollback_timeout), color=C.COLOR_WARN)

    def _run_rollback(self, scope, cliargs):
        """Start the child; returns (LaunchResult or None, per-host outcome, failure reason or None)."""
        files = self._rollback_files = _launcher.rollback_files(self.report_dir, self.incident_id)
        playbook = self._rollback_playbook_used = _launcher.resolve_playbook(self.rollback_playbook,
                                                                             self.playbook_path)
        launch, hosts, reason, self._rollback_command = _launcher.launch_local(
            self.ansible_playbook, playbook, cliargs, scope, self._rollback_request(scope), files,
            self.rollback_timeout, self.timeline, header='# failsafe rollback for incident %s' % self.incident_id,
            on_start=lambda: self._rollback_start(scope, playbook), warn=self._warn, echo=self._echo,
            redact=self.redactor.text)
        return launch, hosts, reason

    def _run_rollback_controller(self, scope):
        """Launch the rollback job template on the controller and wait; same return values as _run_rollback."""
        self._rollback_files = {}
        rollback_vars = self._rollback_request(scope)
        self._rollback_playbook_used = 'controller job template %s' % self.get_option('controller_rollback_template')
        self._rollback_start(scope, self._rollback_playbook_used)
        launch, hosts, reason, command = _controller.launch_rollback(
            self.get_option, scope, rollback_vars, self.rollback_timeout, self.timeline, echo=self._echo)
        self._rollback_command = command
        return launch, hosts, reason

    def _rollback_request(self, scope):
        """The rollback request of ``scope`` (``_launcher.rollback_request``): the same extra vars for the local child,
        the controller's job template and the printed way out. Connections: the hosts whose play set a keyword."""
        return _launcher.rollback_request(
            self.run.run_id, self.run.rollback_hosts(scope), self.incident_id,
            connection=dict((host, self.connections[host]) for host in scope if self.connections.get(host)),
            stages=dict((h, self.layer_stages[h]) for h in scope if h in self.layer_stages))

    def _echo(self, line):
        self._display.display('rollback | %s' % line)

    def _write_incident(self, launch, scope, reason=None, hosts=None, failures=None):
        incident = self.redactor.data(build_incident(
            self.run, self.timeline, self.incident_id, self.outcome, scope, self.rollback_scope, launch=launch,
            reason=reason, hosts=hosts, failures=failures, launched={
                'playbook': self._rollback_playbook_used, 'command': self._rollback_command,
                'files': self._rollback_files},
            left_by_scope=self._left_by_scope, playbook=self.playbook_path, was_it_us=self._dependency_answer(),
            dependency_probes=self.dependency_probes, self_reverted=self.self_reverted,
            alerts=self.alerts.records if self.alerts else (), ladder=self.ladder, spool_path=self.spool_path,
            timeout=self.rollback_timeout))
        try:
            self.report_json, self.report_md = write_report(incident, self.report_dir)
            self.report_html = incident['files'].get('report_html')
        except OSError as exc:
            self.report_json = self.report_md = self.report_html = None
            self._warn('could not write the incident report to %s: %s (setting report_dir)' % (self.report_dir, exc))
        _junit.write_or_warn(self.junit_file, incident, self._warn)
        return incident

    def _banner_failed(self, reason, way_out=None):
        self._display.display(_summary.failed_banner(self.incident_id, self.redactor.text(reason or 'unknown reason'),
                                                     self.redactor.text(way_out) if way_out else None),
                              color=C.COLOR_ERROR)

    def _summary_line(self):
        lines = _summary.summary_lines(
            self.outcome, self.incident_id, self._refused if self.outcome == 'refused' else self.run.counted_failures,
            rollback_hosts=self._rollback_hosts, reports=(self.report_json, self.report_md, self.report_html),
            rollback_log=self._rollback_files.get('rollback_log'), spool_path=self.spool_path)
        color = C.COLOR_ERROR if self.outcome in ('rollback_failed', 'not_started') else C.COLOR_WARN
        self._display.display('\n'.join(lines), color=color)

    def _at_exit(self):
        """The run ended without a play recap (SIGINT, SIGTERM, a crash of ansible itself): roll back what is open
        (rollback_on_interrupt), else never leave a detected failure unreported."""
        if self.finished or not self.enabled or self.child_mode:
            return
        open_hosts = [h for h in self.run.opened_order if self.run.has_open_transaction(h)]
        if not (self.run.needs_rollback() or open_hosts):
            return
        self.finished = True
        if self.rollback_on_interrupt:
            why = self._signals.fired or 'the run ended without a play recap'
            try:
                self._finish(None, interrupted=why)
                self._report_alert_problems(final=True)
                return
            except BaseException as exc:  # pylint: disable=broad-except
                self._warn('rollback after the interruption failed: %s: %s' % (type(exc).__name__, exc))
                if self.outcome is not None:
                    return
        try:
            self._ensure_incident()
            self.outcome = 'not_started'
            report = report_paths(self.report_dir, self.incident_id)
            self._alert('rollback_failed', 'critical', **_outcome.not_started_alert(
                self.run.scope(self.rollback_scope), report))
            self.alerts.flush()
            self._write_incident(None, self.run.scope(self.rollback_scope), reason=_outcome.NOT_STARTED)
            sys.stderr.write('failsafe auto_rollback: ROLLBACK NOT STARTED; incident %s\n' % (report[0],))
        except Exception:  # pylint: disable=broad-except
            pass
