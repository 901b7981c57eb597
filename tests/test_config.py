from pathlib import Path

import pytest

from skillbuild.config import ConfigError, load_settings, marketplace_id


def write_pyproject(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.skillbuild]\n" + body)
    return path


def test_layers_override_in_order(tmp_path):
    pyproject = write_pyproject(tmp_path, 'model = "from-pyproject"\nmax_body_lines = 400\n')
    s = load_settings(cli={}, env={}, pyproject=pyproject, project_root=tmp_path)
    assert s.model == "from-pyproject" and s.max_body_lines == 400
    s = load_settings(cli={}, env={"SKILLBUILD_MODEL": "from-env"}, pyproject=pyproject, project_root=tmp_path)
    assert s.model == "from-env" and s.sources["model"] == "environment"
    s = load_settings(cli={"model": "from-cli"}, env={"SKILLBUILD_MODEL": "from-env"}, pyproject=pyproject,
                      project_root=tmp_path)
    assert s.model == "from-cli" and s.sources["model"] == "command line"


def test_unknown_key_in_pyproject_is_named(tmp_path):
    pyproject = write_pyproject(tmp_path, 'modle = "x"\n')
    with pytest.raises(ConfigError, match=r"pyproject.toml \[tool.skillbuild\]: unknown setting 'modle'"):
        load_settings(cli={}, env={}, pyproject=pyproject, project_root=tmp_path)


def test_unknown_environment_variable_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown variable SKILLBUILD_MODLE"):
        load_settings(cli={}, env={"SKILLBUILD_MODLE": "x"}, pyproject=tmp_path / "none.toml", project_root=tmp_path)


def test_invalid_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match="setting 'provider' = 'cloud' is invalid: expected one of"):
        load_settings(cli={"provider": "cloud"}, env={}, pyproject=tmp_path / "n.toml", project_root=tmp_path)
    with pytest.raises(ConfigError, match="'max_attempts' = '0' is invalid"):
        load_settings(cli={"max_attempts": "0"}, env={}, pyproject=tmp_path / "n.toml", project_root=tmp_path)
    with pytest.raises(ConfigError, match="gemini-2.0-flash is retired"):
        load_settings(cli={"model": "gemini-2.0-flash"}, env={}, pyproject=tmp_path / "n.toml",
                      project_root=tmp_path)


def test_provider_auto_follows_project(tmp_path):
    none = tmp_path / "n.toml"
    assert load_settings(cli={}, env={}, pyproject=none, project_root=tmp_path).provider == "offline"
    s = load_settings(cli={}, env={"GOOGLE_CLOUD_PROJECT": "p1"}, pyproject=none, project_root=tmp_path)
    assert s.provider == "vertex" and s.project == "p1"
    s = load_settings(cli={"provider": "offline"}, env={"GOOGLE_CLOUD_PROJECT": "p1"}, pyproject=none,
                      project_root=tmp_path)
    assert s.provider == "offline"


def test_state_is_kept_per_marketplace(tmp_path):
    a, b = tmp_path / "a" / "market", tmp_path / "b" / "market"
    assert marketplace_id(a) != marketplace_id(b)
    assert marketplace_id(a).startswith("market-")
    s = load_settings(cli={"marketplace": str(a)}, env={}, pyproject=tmp_path / "n.toml", project_root=tmp_path)
    assert s.cache_dir == tmp_path / "cache" / marketplace_id(a.resolve())
    assert s.build_dir == tmp_path / "build" / marketplace_id(a.resolve())


def test_every_state_path_comes_from_settings(tmp_path):
    """The locations users and tools rely on: cache/<m>/ is rebuildable, build/ is kept."""
    market = tmp_path / "market"
    s = load_settings(cli={"marketplace": str(market)}, env={}, pyproject=tmp_path / "n.toml", project_root=tmp_path)
    cache, build = tmp_path / "cache" / marketplace_id(market), tmp_path / "build" / marketplace_id(market)
    assert (s.analysis_dir, s.rejected_dir, s.responses_dir) == (cache / "analysis", cache / "rejected",
                                                                 cache / "responses")
    assert (s.state_file, s.lock_file) == (cache / "doit-state.sqlite3", cache / "run.lock")
    assert (s.audit_db, s.logs_dir, s.log_file("r1")) == (build / "audit.sqlite3", build / "logs",
                                                           build / "logs" / "r1.log")
    assert (s.backups_dir, s.archives_dir, s.restored_dir) == (build / "backups", build / "backups" / "archive",
                                                               build / "restored")
    assert s.report_file == build / "report.html"
    assert s.latest_report_file == tmp_path / "build" / "report.html"
    assert s.throttle_db == tmp_path / "build" / "throttle.sqlite3"  # one for every marketplace


def test_marketplace_id_is_computed_once(tmp_path, monkeypatch):
    import skillbuild.config as config

    s = load_settings(cli={"marketplace": str(tmp_path / "m")}, env={}, pyproject=tmp_path / "n.toml",
                      project_root=tmp_path)
    calls = []
    real = config.marketplace_id
    monkeypatch.setattr(config, "marketplace_id", lambda root: calls.append(root) or real(root))
    first = s.marketplace_id
    assert [s.marketplace_id, s.cache_dir.name, s.build_dir.name, s.audit_db.parent.name] == [first] * 4
    assert len(calls) == 1


def test_progress_names_the_log_file_as_settings_do(tmp_path):
    from skillbuild.ui.progress import RunProgress

    s = load_settings(cli={}, env={}, pyproject=tmp_path / "n.toml", project_root=tmp_path)
    assert RunProgress("r7", s.logs_dir, 0).log == s.log_file("r7")


def test_token_is_hidden_from_repr_and_fingerprints(tmp_path):
    s = load_settings(cli={}, env={"SKILLBUILD_VERTEX_TOKEN": "sekrit-123"}, pyproject=tmp_path / "n.toml",
                      project_root=tmp_path)
    assert s.vertex_token == "sekrit-123"
    assert "sekrit-123" not in repr(s)
    assert "sekrit-123" not in str(s.fingerprint("vertex_token", "model"))


def test_task_arguments_are_not_settings(tmp_path):
    s = load_settings(cli={"plugin": "x", "at": "run1"}, env={}, pyproject=tmp_path / "n.toml",
                      project_root=tmp_path)
    assert s.model == "gemini-2.5-flash"


def test_exclude_is_a_list_in_pyproject_and_comma_separated_elsewhere(tmp_path):
    from skillbuild.config import DEFAULT_EXCLUDE

    assert load_settings(cli={}, env={}, pyproject=tmp_path / "none.toml", project_root=tmp_path).exclude == \
        DEFAULT_EXCLUDE
    pyproject = write_pyproject(tmp_path, 'exclude = ["backups", "legacy/*"]\n')
    s = load_settings(cli={}, env={}, pyproject=pyproject, project_root=tmp_path)
    assert s.exclude == ("backups", "legacy/*")
    s = load_settings(cli={}, env={"SKILLBUILD_EXCLUDE": "old, drafts"}, pyproject=pyproject, project_root=tmp_path)
    assert s.exclude == ("old", "drafts") and s.sources["exclude"] == "environment"
    assert load_settings(cli={"exclude": "tmp"}, env={}, pyproject=pyproject, project_root=tmp_path).exclude == ("tmp",)
    with pytest.raises(ConfigError, match="setting 'exclude' = 3 is invalid: expected a list of glob patterns"):
        load_settings(cli={}, env={}, pyproject=write_pyproject(tmp_path, "exclude = 3\n"), project_root=tmp_path)
