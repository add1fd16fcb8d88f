"""Makes data/tests/fixtures/chat_templates.json: chat templates in the style of the hub's (Qwen2.5's
with its default system prompt and tool branch, Llama 3.1's with its dates and `namespace`,
Gemma's with `raise_exception` and roles that must alternate, Qwen3's that drops the reasoning of
earlier turns, and a ChatML one with `{% generation %}` blocks), conversations, and what
transformers' `apply_chat_template` renders for them: the text with and without the generation
prompt, the error a template raises, and for templates with generation blocks the byte spans of
`return_assistant_tokens_mask`. The Rust tests `template::*` render the same with minijinja and
compare.

    python3 benches/hf/make_template_fixtures.py data/tests/fixtures/chat_templates.json
"""
import json, sys
from datetime import datetime
import transformers
from transformers.utils.chat_template_utils import render_jinja_template

QWEN25 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LLAMA31 = r"""{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{%- set ns = namespace(turns=0) %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- set ns.turns = ns.turns + 1 %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
         "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
         "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
         "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
         "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")

QWEN3 = r"""{%- for message in messages %}
    {%- set content = message.content %}
    {%- if message.role == "assistant" %}
        {%- if not loop.last and '</think>' in content %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}"""

GENERATION = r"""{%- for message in messages %}
    {%- if message['role'] == 'assistant' %}
        {{- '<|im_start|>assistant\n' }}
        {%- generation %}
            {{- message['content'] + '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\n' }}
    {%- else %}
        {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"""

M = lambda role, content: {"role": role, "content": content}
chat = [M("system", "Be brief."), M("user", "Hi"), M("assistant", "Hello! ✓"), M("user", "2+2?"), M("assistant", "4")]
no_system = chat[1:]
thinking = [M("user", "2+2?"), M("assistant", "<think>\nadd\n</think>\n\n4"), M("user", "3+3?"),
            M("assistant", "<think>\nadd again\n</think>\n\n6")]
tools = [{"type": "function", "function": {"name": "add", "description": "Adds.",
          "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}}]

specials = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
cases = [
    ("qwen25", QWEN25, {"bos_token": None, "eos_token": "<|im_end|>"}, [chat, no_system], None),
    ("qwen25-tools", QWEN25, {"bos_token": None, "eos_token": "<|im_end|>"}, [no_system], tools),
    ("llama31", LLAMA31, specials, [chat, no_system], None),
    ("gemma", GEMMA, {"bos_token": "<bos>", "eos_token": "<eos>"}, [no_system, chat], None),
    ("qwen3", QWEN3, {"bos_token": None, "eos_token": "<|im_end|>"}, [thinking], None),
    ("generation", GENERATION, {"bos_token": None, "eos_token": "<|im_end|>"}, [chat, no_system], None),
]
date = datetime.now().strftime("%d %b %Y")
out = {"transformers": transformers.__version__, "date_placeholder": "{DATE}", "cases": []}
for name, template, sp, convos, tool_list in cases:
    entry = {"name": name, "template": template, "specials": sp, "tools": tool_list, "conversations": []}
    for messages in convos:
        c = {"messages": messages}
        try:
            for gen in (False, True):
                rendered, indices = render_jinja_template(conversations=[messages], tools=tool_list,
                    chat_template=template, add_generation_prompt=gen,
                    return_assistant_tokens_mask=not gen, **sp)
                text = rendered[0]
                c["prompt" if gen else "text"] = text.replace(date, "{DATE}")
                if not gen and "{%- generation" in template:
                    c["spans"] = [[len(text[:s].encode()), len(text[:e].encode())] for s, e in indices[0]]
        except Exception as e:  # the template raised
            c = {"messages": messages, "error": str(e)}
        entry["conversations"].append(c)
    out["cases"].append(entry)
json.dump(out, open(sys.argv[1], "w"), indent=1, ensure_ascii=False)
print("wrote", sys.argv[1], [(c["name"], len(c["conversations"])) for c in out["cases"]])
