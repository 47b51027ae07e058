"""Chat templates are bundle content: the sandbox blocks escapes, and cost limits stop hangs and memory bombs."""

import time

import pytest

from edgelmm.errors import BundleError, InputError
from edgelmm.runtime.template import compile_template, render


def _render(source, **variables):
    return render(compile_template(source), messages=[{"role": "user", "content": "hi"}], **variables)


def test_real_templates_still_render():
    from edgelmm.models.loaded import CHATML_TEMPLATE

    out = _render(CHATML_TEMPLATE, add_generation_prompt=True)
    assert out == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert (
        _render("{{ messages | tojson }} {{ range(3) | list }} {{ 'ab' * 3 }} {{ '-' | center(9) }}")
        == '[{"role": "user", "content": "hi"}] [0, 1, 2] ababab     -    '
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ ''.__class__.__mro__ }}", "SecurityError: access to attribute '__class__'"),
        ("{{ messages.append(1) }}", "SecurityError"),
        ("{{ 'a' * 10**10 }}", "repetition of 1 x 10000000000 exceeds"),
        ("{{ [0] * 2000000 }}", "repetition of 1 x 2000000 exceeds"),
        ("{{ 10 ** 100000 }}", "exponent 100000 exceeds"),
        ("{{ lipsum(3) }}", "UndefinedError: 'lipsum' is undefined"),
        ("{{ '-' | center(10**9) }}", "integer argument 1000000000 exceeds"),
        ("{{ 'x'.ljust(10**9) }}", "integer argument 1000000000 exceeds"),
        ("{{ range(10**9) | list }}", "integer argument 1000000000 exceeds"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{% for i in range(100000) %}{{ 'abcdefghij' * 10 }}{% endfor %}", "output exceeds 4000000 characters"),
    ],
)
def test_hostile_templates_fail_as_bundle_errors(source, message):
    with pytest.raises(BundleError, match=message) as err:
        _render(source)
    assert len(str(err.value).splitlines()) == 1


def test_a_template_that_never_ends_is_stopped():
    start = time.perf_counter()
    with pytest.raises(BundleError, match="did not finish rendering within 0.5 s"):
        render(
            compile_template("{% for a in range(9999) %}{% for b in range(9999) %}{% endfor %}{% endfor %}"),
            timeout_s=0.5,
        )
    assert time.perf_counter() - start < 30


def test_raise_exception_is_the_users_problem_and_syntax_errors_the_bundles():
    with pytest.raises(InputError, match="the chat template refused the messages: no system role"):
        _render("{{ raise_exception('no system role') }}")
    with pytest.raises(BundleError, match="does not compile: TemplateSyntaxError"):
        compile_template("{% for %}")
    with pytest.raises(BundleError, match="lone surrogates"):
        _render("\ud800")
