"""The contracts between processes and hosts (server/contract/): any text
gives a record or a clear refusal, a newer format is refused with what to
do, an older one is read, and what one side writes the other reads back."""
from __future__ import annotations

import os

import pytest

from hotplate.server.contract.fleet import FORMAT, Failure, HostReport, Member, Rollout, Target, Unreadable
from hotplate.server.contract.layout import Layout

GARBAGE = [b"", b"{not json", b"\xff\xfe", b"[]", b"42", b'"text"', b"null", b'{"release": 5}',
           b'{"failed": "yes"}', b'{"failed": {"outcome": 3}}', b'{"at": "noon"}', b'{"release": "r1", "bogus": 1}']


@pytest.mark.parametrize("data", GARBAGE)
def test_a_host_key_that_holds_garbage_reads_as_unreadable_never_raises(data):
    report = HostReport.load(data)
    if data == b'{"release": "r1", "bogus": 1}':  # a field this host does not know: ignored, as a newer minor field
        assert report.error is None and report.release == "r1"
    else:
        assert report.error and report.release is None, (data, report)


@pytest.mark.parametrize("data", GARBAGE + [b'{"target": {"release": "r1"}, "previous": null, "waves": "x", "leader": "a"}',
                                            b'{"target": {}, "previous": null, "waves": [], "leader": "a"}',
                                            b'{"target": {"release": "r1"}, "previous": null, "waves": [["a"]], '
                                            b'"leader": "a", "state": "Whatever"}'])
def test_a_rollout_key_that_holds_garbage_is_refused_as_unreadable(data):
    with pytest.raises(Unreadable):
        Rollout.load(data)


def test_a_newer_format_is_refused_with_what_to_do_and_an_older_one_is_read():
    newer = HostReport.load(f'{{"release": "r1", "format": {FORMAT + 1}}}')
    assert "newer than this host's" in newer.error and "upgrade hotplate" in newer.error
    with pytest.raises(Unreadable, match="upgrade hotplate"):
        Rollout.load(f'{{"target": {{"release": "r1"}}, "previous": null, "waves": [["a"]], "leader": "a", '
                     f'"format": {FORMAT + 1}}}')
    old = HostReport.load('{"release": "r1", "failed": {"release": "r2", "reason": "SmokeCheckFailed"}}')
    assert old.error is None and old.failed.blames(), "a report from before outcomes: the release's fault"
    assert Member.load(b"garbage").seen == 0 and Member.load(Member(12.5).dump()).seen == 12.5


def test_what_one_host_writes_the_other_reads_back():
    report = HostReport("r1", "c" * 40, "Healthy", None, Failure("r0", "b" * 40, "LeaderLost", "errored"),
                        "follower", 1.5, "age1xyz")
    assert HostReport.load(report.dump()) == report and not report.failed.blames()
    rollout = Rollout(Target("r2", "c" * 40, "fix", "ann", "cfg"), Target("r1"), [["a"], ["b", "c"]], "a")
    back = Rollout.load(rollout.dump())
    assert back == rollout and back.desired("b") == Target("r1") and back.back == "r1"
    back.wave = 1
    assert back.desired("c").release == "r2" and Target("r2", None).annotations() == {
        "hotplate.release": "r2", "hotplate.message": "", "hotplate.author": ""}


def test_every_path_under_state_comes_from_the_layout(tmp_path):
    """The master, its workers, the smoke check and the job runner derive
    their paths from one root; links they follow lead where the controller
    put them."""
    layout = Layout(tmp_path / "state")
    for path in (layout.releases, layout.commits, layout.run):
        path.mkdir(parents=True)
    (layout.releases / "r1").mkdir()
    assert layout.live_release() is None and layout.verified() is None
    layout.switch("r1", "a" * 40)
    assert layout.live_release() == "r1" and layout.live_commit() == "a" * 40
    assert os.readlink(layout.current) == "commits/" + "a" * 40
    assert layout.ready("r1") and not layout.ready("r2"), "live, and no fence: a living controller gates it"
    layout.fenced.touch()
    assert not layout.ready("r1"), "fenced: only the verified release is ready"
    layout.vouch("r1", "a" * 40)
    assert layout.ready("r1") and layout.verified().commit == "a" * 40
    layout.verified_file.write_text("{garbage")
    assert layout.verified() is None
    assert len(layout.tag) == 12 and layout.tag == Layout(str(tmp_path / "state") + "/").tag


def test_a_worker_report_always_fits_what_its_reader_takes():
    """Many modules whose hp_init logged long lines: the errors are cut, the
    report is still read (it was lost past 64 KiB, and the worker with it)."""
    from hotplate.server.contract.report import MAX_REPORT, ModuleReport, Report
    modules = tuple(ModuleReport(f"m{i}", False, "hp_init returned -1, which said:" + "\n    | é" * 5000)
                    for i in range(20))
    data = Report(123, "r1", modules, None, 1.0).encode()
    assert len(data) <= MAX_REPORT
    back = Report.parse(123, data)
    assert back.release == "r1" and len(back.modules) == 20 and "(cut: see `hotplate logs --app`)" in back.modules[0].error
    small = Report(123, "r1", (ModuleReport("m", False, "short"),), None, 1.0)
    assert Report.parse(123, small.encode()).modules[0].error == "short", "what fits is never cut"
