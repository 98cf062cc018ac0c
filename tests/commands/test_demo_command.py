"""``mico-chat demo``: a chat about the UI's first example clip, with its ground truth printed."""

import argparse


def test_demo_asks_the_example_question_and_prints_the_ground_truth(tmp_path, capsys):
    from helpers.train_fixtures import save_tiny_model

    from mico_chat.commands import demo
    from mico_chat.serve.examples import world_examples

    model = save_tiny_model(tmp_path / "model")
    world = tmp_path / "world"
    assert demo.run(argparse.Namespace(model=str(model), question=None, out=world)) == 0
    example = world_examples(world)[0]
    out = capsys.readouterr().out
    assert f"clip: {example.path}" in out
    assert f"expected answer: {example.answer}" in out and f"you> {example.question}" in out
    assert "the clip (ground truth): " in out and "assistant> " in out
    assert demo.run(argparse.Namespace(model=str(model), question="Is it red?", out=world)) == 0
    out = capsys.readouterr().out
    assert "you> Is it red?" in out and "expected answer" not in out
