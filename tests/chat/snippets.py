"""Small Jinja snippets covering the interpreter's subset beyond the real templates. Rendered with
jinja2 in transformers' chat-template environment (ImmutableSandboxedEnvironment, trim_blocks,
lstrip_blocks, loopcontrols, transformers' tojson and raise_exception) by `python3 snippets.py`,
which writes snippets_expected.json; that environment reproduced transformers 5.17's
apply_chat_template byte for byte on all cases of expected.json. Needs only the jinja2 package."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MESSAGES = [
    {"role": "system", "content": "Sys prompt."},
    {"role": "user", "content": "Héllo wörld, how are you?"},
    {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nFine.", "tool_calls": [
        {"id": "abc", "function": {"name": "f", "arguments": {"x": 1, "y": [1.5, None, True], "z": "é\"\n"}}}]},
    {"role": "user", "content": "  padded\ttext \n"},
]

SNIPPETS = [
    # whitespace control, trim_blocks, lstrip_blocks
    "a\n  {% if true %}\n  b\n  {% endif %}\nc",
    "a  {{- 'x' -}}  b\n{{ 'y' }}\n",
    "line1\n    {%- if true %} X {% endif -%}\n   line2",
    "  {%+ if true %}keep{% endif %}\n  {% if true +%}\ntrail{% endif %}",
    "x {# comment #}\ny\n  {# own line #}\nz",
    "{% raw %}{{ a }}{% endraw %} | {%- raw -%}  b  {%- endraw -%} |",
    "{{ 'a' }}\n{{ 'b' }}\n\n",
    "{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}\n",
    "{%- for i in range(3) -%}\n  [{{ i }}]\n{%- endfor -%}",
    "\t{% if 1 %}tab{% endif %}\n   {{ 'var not lstripped' }}",
    # literals and printing
    "{{ 1.0 }} {{ 1.5e-7 }} {{ 123456789.0 * 1000000000 }} {{ 1/3 }} {{ 2**0.5 }} {{ -0.0 }} {{ 10 ** 16 * 1.0 }} {{ 1e16 }} {{ 0.0001 }} {{ 0.00001 }}",
    "{{ [1, [2, 'x\\'y'], {'a': none}] }} {{ ('solo',) }} {{ () }} {{ {} }} {{ [] }} {{ 'q\"uote' }} {{ ['q\"uote', \"a'b\", 'tab\\t', 'nl\\n', 'é'] }}",
    "{{ \"esc: \\\\ \\u00e9 \\x41 \\n|\" }} {{ 'adj' 'acent' }}",
    "{{ true }}{{ True }}{{ none }}{{ None }}{{ false }}",
    # tojson
    "{{ messages[2].tool_calls[0].function.arguments | tojson }}",
    "{{ messages[2].tool_calls[0].function | tojson(indent=2) }}",
    "{{ messages[2].tool_calls[0].function | tojson(indent=0) }}|{{ {'b': 1, 'a': [1, 2]} | tojson(sort_keys=true) }}|{{ [1, {'k': 'v'}] | tojson(separators=(',', ':')) }}",
    "{{ {'u': 'ünï \u2028 \x01 \\\\ /', 'f': 0.1, 'big': 12345678901234, 'e': 1e100, 'empty': [], 'ed': {}} | tojson }}",
    "{{ [[], {}] | tojson(indent=2) }}{{ 'str' | tojson }}{{ none | tojson }}{{ 3 | tojson }}",
    # slicing and indexing
    "{{ 'abcdef'[1:4] }} {{ 'abcdef'[::-1] }} {{ 'abcdef'[::2] }} {{ 'abcdef'[-2:] }} {{ 'abcdef'[:-2] }} {{ 'abcdef'[4:1:-1] }} {{ 'abcdef'[10:] }}|{{ 'abcdef'[-10:2] }}",
    "{{ [1,2,3,4,5][1:-1] }} {{ [1,2,3,4,5][::-2] }} {{ [1,2,3][5:] }} {{ messages[-1].role }} {{ messages[1:3] | map(attribute='role') | list }}",
    "{{ 'héllo'[1] }}{{ 'héllo'[-4:-1] }}{{ '日本語テキスト'[2:5] }} {{ '日本語'|length }}",
    # operators
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7.5 // 2 }} {{ 7 % -3 }} {{ -7.5 % 2 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 1 + 2 * 3 - 4 / 2 }} {{ 'a' ~ (1 + 2) }} {{ 'a' ~ 1 * 2 }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}",
    "{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ none == none }} {{ 'x' != 'y' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }}",
    "{{ 1 if 0 }}|{{ 'a' if 1 else 'b' }}|{{ 0 or '' or 'last' }}|{{ 1 and 2 and 3 }}|{{ not 0 and not '' }}|{{ [] or 'empty' }}",
    # strings
    "{{ messages[1].content.split(',') }} {{ messages[1].content.split() }} {{ ' a  b '.split(' ') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ ' x y z '.rsplit(None, 1) }}",
    "[{{ messages[3].content.strip() }}] [{{ messages[3].content.lstrip() }}] [{{ messages[3].content.rstrip() }}] [{{ 'xxhixx'.strip('x') }}] [{{ '\u3000wide\u3000'.strip() }}]",
    "{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'abcabc'.find('c') }} {{ 'abcabc'.rfind('c') }} {{ 'abcabc'.count('bc') }} {{ 'é-ö'.upper() }} {{ 'ÉÖ'.lower() }}",
    "{{ 'hello wORLD foo-bar'.title() }}|{{ 'hello wORLD foo-bar' | title }}|{{ 'hELLO World' | capitalize }}|{{ 'mIxEd' | lower }}{{ 'mIxEd' | upper }}",
    "{{ '-'.join(['a', 'b']) }} {{ 'abc'.isdigit() }} {{ '123'.isdigit() }} {{ 'line1\\nline2\\r\\nline3'.splitlines() }}",
    # filters
    "{{ [3, 1, 2] | sort }} {{ ['b', 'A', 'c'] | sort }} {{ ['b', 'A', 'c'] | sort(case_sensitive=true) }} {{ [3, 1, 2] | sort(reverse=true) }} {{ messages | sort(attribute='role') | map(attribute='role') | join(',') }}",
    "{{ ['a', 'A', 'b', 'a'] | unique | list }} {{ [1, 2, 1] | unique | list }} {{ {'b': 1, 'a': 2} | dictsort }} {{ {'b': 1, 'a': 2} | dictsort(by='value', reverse=true) }}",
    "{{ messages | selectattr('tool_calls', 'defined') | list | length }} {{ messages | rejectattr('role', 'in', ['user', 'system']) | map(attribute='role') | list }} {{ messages | selectattr('role', '==', 'user') | map(attribute='content') | map('length') | list }}",
    "{{ [0, 1, '', 'x', none] | select | list }} {{ [1, 2, 3, 4] | select('even') | list }} {{ [1, 2, 3, 4] | reject('odd') | list }} {{ [1, 2, 3] | map('string') | join('+') }}",
    "{{ messages | map(attribute='missing', default='?') | join }} {{ messages | map(attribute='role') | first }} {{ messages | last | string | length > 10 }} {{ [] | first is undefined }}",
    "{{ 'x' | default('d') }} {{ undefined_var | default('d') }} {{ '' | default('d') }} {{ '' | default('d', true) }} {{ none | default('d') }} {{ undefined_var | d('short') }}",
    "{{ ' trim me ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 42 | string }}|{{ [1] | string }}|{{ 'abc' | list }}|{{ {'a': 1} | list }}|{{ 'abc' | reverse }}|{{ [1, 2] | reverse | list }}",
    "{{ '3' | int }} {{ '3.9' | int }} {{ 'x' | int }} {{ 'x' | int(-1) }} {{ 3.9 | int }} {{ '0x1A' | int(0, 16) }} {{ '2.5' | float }} {{ 'y' | float }} {{ -3 | abs }} {{ -2.5 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ [1, 2.5] | sum }}",
    "{{ 'one two  three\\nfour' | wordcount }} {{ 'a\\nb' | indent }} {{ 'a\\n\\nb' | indent(2, blank=true) }} {{ 'a\\nb' | indent('> ', first=true) }}",
    "{{ {'k': 'v', 'n': 1} | items | list }} {% for k, v in {'x': 1, 'y': 2} | items %}{{ k }}{{ v }}{% endfor %} {{ [1, 2, 3] | length }} {{ {'a': 1} | count }} {{ [4, 7, 1] | max }} {{ [4, 7, 1] | min }}",
    "{{ '<a href=\"x\">&</a>' | e }} {{ 'x' | safe }} {{ [1, 2] | join(', ') }} {{ messages | join(',', attribute='role') }}",
    # tests
    "{{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is integer }} {{ true is boolean }} {{ none is none }} {{ 'x' is string }} {{ [] is sequence }} {{ {} is mapping }} {{ 'x' is iterable }} {{ 3 is divisibleby(3) }} {{ 1 is sameas 1 }} {{ 'a' is in 'abc' }} {{ 5 is gt 3 }} {{ 5 is lt(3) }} {{ 'x' is eq 'x' }} {{ range is callable }}",
    "{{ messages[0].nope is defined }} {{ messages[0].nope is undefined }} {{ messages[0]['role'] is defined }} {{ messages[9] is defined }} {{ messages[2].tool_calls is not none }}",
    # loops
    "{% for m in messages %}{{ loop.index0 }}{{ loop.revindex0 }}{{ loop.first|int }}{{ loop.last|int }}{% if not loop.first %}<{{ loop.previtem.role[0] }}{% endif %}{% if not loop.last %}>{{ loop.nextitem.role[0] }}{% endif %};{% endfor %}",
    "{% for m in messages if m.role == 'user' %}{{ loop.index }}/{{ loop.length }}:{{ m.content[:5] }};{% else %}none{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}",
    "{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}({{ loop.index }}){% endfor %}",
    "{% for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %} {{ range(2, 10, 3) | list }} {{ range(3, 0, -1) | list }}",
    "{% set x = 'outer' %}{% for i in [1] %}{% set x = 'inner' %}{{ x }}{% endfor %}{{ x }}{% if true %}{% set x = 'if' %}{% endif %}{{ x }}",
    "{% set ns = namespace(n=0, items='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% set ns.items = ns.items ~ i %}{% endfor %}{{ ns.n }} {{ ns.items }}",
    "{% for k, v in messages[2].tool_calls[0].function.arguments.items() %}{{ k }}={{ v }} {% endfor %}{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}",
    # set, macros, call
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = (3, 4) %}{{ t[1] }}{% set blk %}B{{ a }}{% endset %}[{{ blk }}]",
    "{% macro m(a, b=2, c='x') %}{{ a }}{{ b }}{{ c }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1) }}|{{ m(1, 3) }}|{{ m(1, c='z') }}|{{ m(1, 2, 3, 4) }}|{{ m(a=5, d=6) }}",
    "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}in{{ 1 + 1 }}{% endcall %}{% macro row(x) %}[{{ caller(x) }}]{% endmacro %}{% call(v) row(7) %}v={{ v }}{% endcall %}",
    "{% macro rec(n) %}{% if n > 0 %}{{ n }}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(4) }}",
    "{% filter upper %}hello {{ 'x' }}{% endfilter %} {{ dict(a=1, b='c') }} {{ namespace(z=1).z }}",
    "{% if messages|length > 3 %}A{% elif messages|length > 1 %}B{% else %}C{% endif %}{% if false %}{% elif false %}{% else %}E{% endif %}",
    # generators (map/select/reject/unique/items) and views (dict.items())
    "{% if messages | selectattr('role', 'eq', 'nobody') %}gen-truthy{% endif %} {{ messages | selectattr('role', 'eq', 'user') | first | attr('role') }} {{ none | selectattr('x') | list }} {{ none | map(attribute='x') | list }} {{ {'a': 1}.items() }} {{ {'a': 1}.keys() }} {{ {'a': 1}.values() | list }} {{ {'a': 1}.items() | length }}",
    "{{ messages | map(attribute='role') | tojson }}",
    "{{ messages | selectattr('role') | length }}",
    "{{ (messages | map(attribute='role'))[0] }}",
    "{{ [1, 2] | reverse | length }}",
    "{{ {'a': 1}.items() | tojson }}",
    "{{ 'a<'|safe + '<b>' }} {{ '<x>' + 'y'|safe }} {{ ('<'|e + '>')|e }} {{ '&'|safe ~ '<' }} {{ none[0] }}|{{ 5['k'] }}|{{ none[1:] }}",
    # printf-style formatting: the % operator and the format filter
    "{{ '%s-%d' % ('a', 3) }}|{{ '%s' % 'x' }}|{{ '%s' % none }}|{{ '%s' % [1, 'a'] }}|{{ '%s' % ((1, 2),) }}|{{ '%(role)s: %(content)s' % messages[0] }}|{{ '%s %(a)s' % {'a': 1} }}|{{ 'abc' % {'a': 1} }}|{{ 'abc' % [1] }}|{{ '%s' % undefined_var }}|{{ '%r' % undefined_var }}|{{ '%(a(b))s' % {'a(b)': 3} }}|{{ '%s' % {'k': 'v'} }}",
    "{{ '%s|%r|%a' % ('é\\x01', 'é\\x01', 'é\\U0001F600\\u2028') }} {{ '%r %a' % ({'k': [1, none, true, 2.5]}, ['ü']) }} {{ '%s %s %s %r' % (true, 0.1, 1e16, 1.0) }} {{ '%d %i %u' % (3.99, -3.99, true) }} {{ '%d' % -0.5 }} {{ '%d' % 1e300 }} {{ '%d %x' % (9223372036854775807, -9223372036854775807 - 1) }} {{ '%x %X %o %#x %#X %#o' % (255, 255, 8, -255, -255, -8) }} {{ '%c%c%c%c' % (72, 'é', 128512, 10) }}",
    "{{ '%f %F %e %E %g %G' % (3.14159, 2.5, 12345.678, 0.000123, 1e-5, 1e20) }} {{ '%.0f %.0f %.0f %.0f' % (0.5, 1.5, 2.5, -0.5) }} {{ '%#.0f %#.0e %#g %#.3g %g' % (3, 3, 1.0, 100, 100000000) }} {{ '%.20f %.17g %.3e' % (0.1, 0.1, -0.0) }} {% set inf = messages|length * 1e308 * 10 %}{{ '%f %F %e %E|%g|%G|%010f|%+f|% f' % (inf, inf, -inf, inf * 0, -(inf * 0), inf * 0, -inf, inf * 0, inf) }}",
    "{{ '[%5s|%-5s|%.1s|%.3s|%5.1s|%05s|%+s|% s|%.0r]' % ('日本', '日本', '日本', 'abcdef', 'xyz', 'ab', 'ab', 'ab', 'x') }} {{ '[%+#010x|%-#8x|%#08o|%#5x|%#-6X|%+x]' % (255, 255, 8, 0, 10, 42) }} {{ '[%08.3f|%-8.3f|%+.2e|% .3g|%+05d|% 05d|%-+05d|%-05d|%0-5d|% -5d]' % (-3.14159, 3.14159, 12345.678, 0.0001234, 3, 3, 3, 3, 3, -3) }} {{ '[%.3d|%+.5x|%.5d|%hd %ld %Ld]' % (7, 42, -42, 1, 2, 3) }} {{ '[%5c|%-3c|%3.1c]' % ('x', 9786, 'y') }}",
    "{{ '[%*d|%-*d|%*d|%.*f|%.*f|%*.*s|%*d]' % (5, 1, 5, 2, -5, 3, 2, 3.14159, -3, 2.5, 6, 2, 'abcdef', true, 7) }} {{ '100%%' % () }} {{ '%%s %s %%' % 1 }} {{ '%s%%' | format(50) }}",
    "{{ '%s, %s!'|format('Hello', 'World') }} {{ '%(a)s and %(b)r'|format(a=1, b='x') }} {{ '%5.2f%%'|format(12.3456) }} {{ 5|format }} {{ none|format }} {{ undefined_var|format }} {{ 'ab'|format(a=1) }} {{ '%s'|format([1, 2]) }} {{ '%s'|format((1, 2)) }} {{ ['%s!', '%s?'] | map('format', 'x') | join(',') }} {{ messages | map(attribute='role') | map('format') | join(',') }}",
    "{{ '<%s|%r|%a>'|safe % ('<b>', '<é>', 'ü&') }} {{ '%s'|safe % [1, '<'] }} {{ '%(a)s'|safe % {'a': '<'} }} {{ ('%s'|safe % '<') + '<' }} {{ '%s'|safe % ('<'|safe) }} {{ '%r' % ('<'|safe) }} {{ '%d|%.1f|%s'|safe % ('12', ' 1.5 ', 3) }} {{ '%d %d %d %f'|safe % ('1_0', ' +12 ', 1.9, '-1_0.5e1') }} {{ '%s'|safe|format('<') }}",
    "{{ '%s %s' % (1,) }}",
    "{{ '%s' % (1, 2) }}",
    "{{ '%d' % 'a' }}",
    "{{ '%(a)s' % (1,) }}",
    "{{ '%z' % 1 }}",
    "{{ '%s' | format(1, a=2) }}",
    # str.format and str.format_map: string.Formatter through jinja2's SandboxedFormatter
    "{{ '{} and {}'.format('a', 1) }}|{{ '{0}{1}{0}'.format('x', 'y') }}|{{ '{name}={v}'.format(name='k', v=2.5) }}|{{ ''.format(1) }}|{{ 'plain'.format() }}|{{ '{1}{1}{0}'.format('a', 'b', 'unused') }}|{{ '{x}'.format(x=1, y=2) }}",
    "{{ '{{}} {{{0}}} }}{{'.format(7) }}|{{ '{}}}'.format(1) }}|{{ '{00}'.format('zero') }}|{{ '{\u0663}'.format(0, 1, 2, 3) }}|{{ '{}'.format('{}').format(5) }}",
    "{{ '{!r} {!r} {!r}'.format(\"it's\", 'say \"hi\"', 'both \\' and \"') }}|{{ '{!s}|{!a}|{!a}'.format('\u00e9', '\u00e9\U0001F600\\n', none) }}|{{ '{0!r:>8}|{0!s:*^6}|'.format('ab') }}",
    "{{ '{:,}|{:_}|{:_x}|{:#b}|{:,}'.format(9223372036854775807, -9223372036854775807 - 1, 9223372036854775807, 255, -9223372036854775807 - 1) }}|{{ '{:e}|{:.2f}|{:%}|{:f}'.format(9223372036854775807, 12345678901234567, 7, 9007199254740993) }}",
    "{{ '{}|{:f}|{:+}|{:z}|{:z.2f}|{:.0f}|{:g}|{:e}|{:z.1%}|{:,}'.format(-0.0, -0.0, -0.0, -0.0, -0.0001, -0.4, -0.0, -0.0, -0.0001, -0.0) }}",
    "{% set inf = messages|length * 1e308 * 10 %}{{ '{}|{:f}|{:F}|{:+}|{:010}|{:e}|{:%}|{:G}|{:x<6}|{: }|{:,}|{:010,.2f}'.format(inf, -inf, inf * 0, inf * 0, -inf, inf, inf, -inf, inf * 0, inf, -inf, inf) }}|{{ '{!r} {}'.format(inf * 0, -(inf * 0)) }}",
    "{{ '[{:>6}|{:<6}|{:^7}|{:\u00e9^7}|{:.1}|{:*>5.2}|{:\u65e5<4}|{:^3}]'.format('\u65e5\u672c', '\u00e9', 'ab', 'ab', '\u65e5\u672c', 'H\u00e9llo', 'x', '\u65e5\u672c') }}",
    "{{ '[{:=+8}|{:=8}|{: =8.2f}|{:x=+10,}|{:0=10}|{:=#10x}|{:=+10.3e}|{:*=-9}]'.format(42, -42, -3.14159, 1234567, -5, 255, 12345.678, -7) }}",
    "{{ '{:%}|{:.0%}|{:.1%}|{:#.0%}|{:+.2%}|{:%}|{:.3%}|{:08.2%}'.format(0.5, 0.125, 0.285, 1, -0.001, 3, 1/3, 0.5) }}",
    "{{ '{:,}|{:,.2f}|{:_.3f}|{:,.3e}|{:,g}|{:,.10g}|{:015,.1f}|{:,}|{:,}|{:_}|{:,.0f}|{:#,.0f}'.format(12345.678, 1234567.891, -9876543.21, 1234567.891, 1234567.891, 1234567.891, -1234.5, 1e16, 1234567.0, 123456789.123, 123456789.0, 1234.5) }}",
    "{{ '[{:5}|{:<5}|{:^5}|{:05}|{:+}|{: }|{:x}|{:#X}|{:#o}|{:b}|{:#_b}|{:c}|{:n}|{:010,}|{:_o}|{:#_x}|{:E}]'.format(42, 42, 42, -42, 42, 42, 255, 255, 8, 5, 255, 9731, 1234567, 1234, 12345, 65535, 12345678) }}",
    "{{ '[{}|{:.3}|{:.0}|{:#}|{:e}|{:.2E}|{:g}|{:G}|{:.3g}|{:#g}|{:n}|{:10.4f}|{:<10.2f}|{:^+10.1f}|{:#.0f}|{:#.0e}]'.format(1.0, 1234.5, 1.5, 1e16, 12345.678, 0.000123, 1e-5, 1e20, 100.0, 1.0, 1234567.0, 3.14159, 2.5, 2.5, 1.0, 1.0) }}",
    "{{ '[{:.2}|{:.5}|{:.6}|{:#.6}|{:.1}|{:.3}|{:#.3}|{:.3}|{:.3}|{:.17}|{:.20f}|{:.3g}|{}|{}|{}]'.format(9.99, 12345.678, 12345.678, 12345.678, 0.0001, 0.0, 0.0, 123.0, 12.0, 0.1, 0.1, 5e-324, 1e22, 1.7976931348623157e308, 2.5e-7) }}",
    "{{ '{}|{}|{:d}|{:>5}|{:x}|{:.2f}|{:c}|{}|{}|{}|{}|{!r}|{}'.format(true, false, true, true, false, true, true, none, [1, 'a', none], {'k': [1.5]}, (1,), none, {'a': 1}.items()) }}",
    "{{ '[{:10}|{:>10}|{:^10}|{:.3}|{:*^9.3}|{:s}|{:05}|{:<05}|{:>05}|{:.0}|{:3}]'.format('left', 'right', 'mid', 'truncate', 'abcdef', 's', 'ab', 'ab', 'ab', 'gone', '') }}",
    "{{ '[{:{}}|{:>{w}}|{:{f}^{w}.{p}f}]'.format('x', 5, 'y', 3.14159, w=7, f='*', p=2) }}|{{ '{0:{1}{2}}'.format(1, '>', 4) }}|{{ '{:{}{}x}'.format(255, '#', 8) }}|{{ '{:{:}}|'.format(1, '') }}",
    "{{ '{0[0][role]:>10}|{0[0].content}|{1[1]}|{1[0][0]}|{2[b][c]}|{2.b.c}|{2[b].c:^8}|{3[0]}|{3[1]}'.format(messages, ['xy', 'zw'], {'b': {'c': 'deep'}}, 'h\u00e9llo') }}|{{ '{m.role}/{m[content]}'.format(m=messages[0]) }}",
    "{{ '[{0[nope]}|{0.nope}|{0.__class__}|{0._x}|{0.update}|{0[update]}|{1[5]}|{1[-1]}|{1.append}|{2.real}|{2.imag}|{2[real]}|{3.x}|{3._y}|{3[x]}|{4.real}|{4.imag}|{5[0]}|{6.__len__}|{7[0]}]'.format({'_x': 'under'}, [1], 5, namespace(x='nsx', _y=1), 2.5, {0: 'int key', '0': 'str key'}, none, (9,)) }}",
    "{{ '{0[0]}{}'.format('ab') }}|{{ '{}{0.real}'.format(3) }}|{{ '{0[a:b]}|{0[a!r]}|{0[a}}b]}'.format({'a:b': 1, 'a!r': 2, 'a}}b': 3}) }}",
    "{{ '{role}: {content}'.format_map(messages[0]) }}|{{ '{a}{b[0]}{b.1}'.format_map({'a': 1, 'b': [2, 3]}) }}|{{ ''.format_map(none) }}",
    "{{ ('<{}>|{!r}|{:>4}|{:<3}'|safe).format('<b>', \"'q'\", '&', 1) }}|{{ ('{}'|safe).format('<i>'|safe) }}|{{ ('{}'|safe).format('<') + '<' }}|{{ '{}'.format('<'|safe) + '<' }}|{{ ('{!s}|{!r}'|safe).format('<'|safe, '<'|safe) }}|{{ '{:>4}'.format('<'|safe) }}|{{ ('{:{}}|'|safe).format('x', 3) }}",
    "{{ '[{}|{!r}|{!s}|{!a}]'.format(undefined_var, undefined_var, undefined_var, undefined_var) }}|{{ '{0.__len__}|{0._undefined_hint}'.format(undefined_var) }}",
    "{{ '[{!r:>6}|{!s:^7}|{!a:.4}|{!r:*<9}|{!r:}]'.format('ab', none, '\u00e9\u00e9', 1.5, 'x') }}",
    "{% for m in messages %}{{ '<|{}|>\\n{}\\n'.format(m.role, m.content) }}{{ '{:-^20}'.format(' %d ' % loop.index) }}{% endfor %}",
    "{{ '[{:c}|{:>3c}|{:05c}|{:<3c}|{:=3c}]'.format(72, 233, 65, 128512, 97) }}|{{ ('{:c}'.format(60)|safe) }}",
    "{{ '[{:<<5}|{:>>5}|{:^^5}|{:==5}|{:0<5}|{:0>5}|{:0^5}|{:<5}|{:{}}]'.format(1, 2, 3, -4, 5, -6, 7, 'x', 'y', '^3') }}",
    "{{ '[{:08,}|{:09,}|{:010,}|{:0=10,}|{:0>10,}|{:>010,}|{: =010,}|{:0=12,}|{:020,}|{:0=20,}]'.format(1234, 1234, 1234, 1234, 1234, 1234, 1234, 12345.0, 1234567.0, 1e100) }}",
    "{{ '{0[0]}'.format('x') ~ '{0}'.format(0) ~ '{}'.format(none) ~ '{:}'.format('') ~ '{!s:}'.format(1) }}",
    "{{ '{0}'.format(1, 2) ~ '{a}'.format(a='\u65e5') | length }}|{{ '{:>3}|{:<3}'.format('\u65e5\u672c', 'e\u0301') }}",
    "{{ '{0}{}'.format(1, 2) }}",
    "{{ '{}{1}'.format(1, 2) }}",
    "{{ '{name}'.format(nom=1) }}",
    "{{ '{2}'.format(1, 2) }}",
    "{{ '{'.format(1) }}",
    "{{ 'a}b'.format() }}",
    "{{ '{0!x}'.format(1) }}",
    "{{ '{:d}'.format('s') }}",
    "{{ '{:5}'.format(none) }}",
    "{{ '{:,n}'.format(1) }}",
    "{{ '{:+}'.format('s') }}",
    "{{ '{:=5}'.format('s') }}",
    "{{ '{:.2d}'.format(1) }}",
    "{{ '{:{:{}}}'.format(1, 2, 3) }}",
    "{{ '{0.}'.format(1) }}",
    "{{ '{0[a]b}'.format({'a': 1}) }}",
    "{{ '{a}'.format_map({'a': 1}, b=2) }}",
    "{{ '{:c}'.format(1114112) }}",
    "{{ ('{:3}'|safe).format('<'|safe) }}",
    "{{ '{0.x}'.format(undefined_var) }}",
    "{{ '{0[x].y}'.format({}) }}",
    "{{ '{:5}'.format(undefined_var) }}",
    "{{ '{:,_}'.format(1) }}",
    "{{ '{:10.2fx}'.format(1.5) }}",
    "{{ '{:.}'.format(1.5) }}",
    "{{ '{:z}'.format(1) }}",
    "{{ '{:+c}'.format(65) }}",
    "{{ '{0.__class__.x}'.format(1) }}",
    "{{ '{a}'.format_map([1]) }}",
    "{{ ('{:{}}'|safe).format('x', '>3') }}",
    "{{ '{[0]}'.format([1]) }}",
    # errors
    "{{ raise_exception('custom failure') }}",
    "{{ messages[0].content + 5 }}",
    "{{ undefined_var.attr }}",
    "{{ none.attr }}x",
    "{% set ns = namespace(l=[]) %}{% do ns.l.append(1) %}",
    "{{ [1].append(2) }}",
    "{{ 1 / 0 }}",
    "{{ {'a': 1}.update({}) }}",
    "{{ 'a' < 1 }}",
    "{{ 'a' ~ 1 + 2 }}",
    "{{ messages | tojson(ensure_ascii=true) }}",
    "{{ undefined_var + 'x' }}",
    "{{ 'x' ~ undefined_var ~ 'y' }} {{ undefined_var | length }} {{ undefined_var | list }} {% for x in undefined_var %}no{% endfor %}ok",
]


def main():
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    cases = []
    for src in SNIPPETS:
        case = {"template": src}
        try:
            case["output"] = env.from_string(src).render(messages=MESSAGES, tools=None, documents=None,
                                                         add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
        except Exception as e:
            case["error"] = "%s: %s" % (type(e).__name__, e)
        cases.append(case)
    doc = {"generator": "tests/chat/snippets.py", "jinja2": jinja2.__version__, "messages": MESSAGES, "cases": cases}
    with open(os.path.join(HERE, "snippets_expected.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
    print(len(cases), "snippets,", sum("error" in c for c in cases), "errors")


if __name__ == "__main__":
    sys.exit(main())
