import openai, anthropic


def test_x(llm, prices_file, pytester):
    pytester.makepyfile(f"""
        import openai, anthropic, pytest
        URL = {llm.url!r}
        @pytest.mark.llm_budget("0.001")
        def test_a(llm_budget):
            c = openai.OpenAI(base_url=URL + "/v1", api_key="k", max_retries=0)
            r = c.chat.completions.create(model="test-model", messages=[{{"role": "user", "content": "hi"}}], max_tokens=20)
            print(r)
            s = c.chat.completions.create(model="test-model", messages=[{{"role": "user", "content": "hi"}}], max_tokens=20, stream=True, stream_options={{"include_usage": True}})
            for ch in s: print(ch)
            a = anthropic.Anthropic(base_url=URL, api_key="k", max_retries=0)
            m = a.messages.create(model="test-model", max_tokens=20, messages=[{{"role": "user", "content": "hi"}}])
            print(m)
            with a.messages.stream(model="test-model", max_tokens=20, messages=[{{"role": "user", "content": "hi"}}]) as st:
                print(st.get_final_message())
            print(llm_budget.stats())
            for i in range(100):
                c.chat.completions.create(model="test-model", messages=[{{"role": "user", "content": "hi"}}], max_tokens=20)
    """)
    r = pytester.runpytest("-s", f"--llm-prices={prices_file}", "--llm-report=r.json")
    print(r.stdout.str())
    print((pytester.path / "r.json").read_text()[:3000])
    print(len(llm.received), llm.billed)
