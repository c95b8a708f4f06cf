"""Workflow templates: parameter validation and injection-proof graph building."""
from __future__ import annotations

import copy
import json
import os
import time

import pytest

from services.render import workflows
from services.render.config import RenderConfig
from services.render.workflows import (RANDOM_SEED_LIMIT, THUMBNAIL_NODE_CLASSES, TemplateError, TemplateStore,
                                              build_graph, load_templates, parse_template, validate_params,
                                              with_thumbnails)
from shared.errors import Unprocessable

CHOICES = {"checkpoints": ["sd15_demo.safetensors", "sdxl_demo.safetensors"], "samplers": ["euler", "dpmpp_2m"],
           "schedulers": ["normal", "karras"]}


@pytest.fixture(scope="module")
def template():
    return load_templates()["text2img"]


def errors_of(template, raw, choices=CHOICES) -> dict:
    with pytest.raises(Unprocessable) as caught:
        validate_params(template, raw, choices)
    assert caught.value.status == 422
    return caught.value.details


def test_defaults_are_filled_and_model_defaults_to_first_live_checkpoint(template):
    params = validate_params(template, {"prompt": "a cat"}, CHOICES)
    assert params["model"] == "sd15_demo.safetensors"
    assert (params["width"], params["height"], params["batchSize"], params["steps"]) == (512, 512, 1, 20)
    assert params["cfgScale"] == 7.0 and params["sampler"] == "euler" and params["scheduler"] == "normal"
    assert params["negativePrompt"] == ""


def test_seed_minus_one_is_resolved_to_a_stored_number(template):
    seeds = {validate_params(template, {"prompt": "x", "seed": -1}, CHOICES)["seed"] for _ in range(5)}
    assert all(0 <= seed < RANDOM_SEED_LIMIT for seed in seeds) and len(seeds) > 1
    assert validate_params(template, {"prompt": "x"}, CHOICES)["seed"] >= 0
    assert validate_params(template, {"prompt": "x", "seed": 42}, CHOICES)["seed"] == 42


@pytest.mark.parametrize("field,value", [
    ("width", 0), ("width", 7), ("width", 100000), ("width", "abc"), ("height", 100), ("width", 512.0),
    ("batchSize", 1.5), ("batchSize", 0), ("batchSize", 5), ("steps", 0), ("steps", 101), ("steps", True),
    ("cfgScale", 0.5), ("cfgScale", 31), ("cfgScale", "7"), ("seed", -2), ("seed", 2**53 + 1),
    ("prompt", ""), ("prompt", "   "), ("prompt", "x" * 2001), ("prompt", 5), ("sampler", "nope"),
    ("scheduler", "nope"), ("model", 3),
])
def test_bad_values_are_422_with_the_field_named(template, field, value):
    raw = {"prompt": "a cat", field: value}
    assert field in errors_of(template, raw)


def test_unknown_fields_and_missing_prompt(template):
    details = errors_of(template, {"negativePrompt": "x", "colour": "red", "denoise": 0.5})
    assert set(details) == {"prompt", "colour", "denoise"}
    assert errors_of(template, ["not", "an", "object"])


def test_original_product_field_names(template):
    params = validate_params(template, {"prompt": "a cat", "negativePrompt": "blurry", "model": "sdxl_demo.safetensors",
                                        "size": "512x768", "batchSize": 2, "cfgScale": 6.5, "steps": 30, "seed": 7,
                                        "sampler": "dpmpp_2m"}, CHOICES)
    assert (params["width"], params["height"]) == (512, 768)
    assert params["model"] == "sdxl_demo.safetensors" and params["cfgScale"] == 6.5
    assert "size" not in params
    for size in ("512", "0x512", "512x7", "big", 512):
        assert "size" in errors_of(template, {"prompt": "a", "size": size})
    assert "size" in errors_of(template, {"prompt": "a", "size": "512x512", "width": 512})


def test_without_a_live_catalog_any_model_name_passes_but_one_is_required(template):
    assert validate_params(template, {"prompt": "a", "model": "other.safetensors"})["model"] == "other.safetensors"
    assert "model" in errors_of(template, {"prompt": "a"}, None)


def test_every_binding_is_applied(template):
    params = validate_params(template, {"prompt": "p", "negativePrompt": "n", "model": "sdxl_demo.safetensors",
                                        "width": 640, "height": 768, "batchSize": 3, "steps": 12, "cfgScale": 4.5,
                                        "seed": 99, "sampler": "dpmpp_2m", "scheduler": "karras"}, CHOICES)
    graph = build_graph(template, template.variants[0], params)
    assert graph["6"]["inputs"]["text"] == "p" and graph["7"]["inputs"]["text"] == "n"
    assert graph["4"]["inputs"]["ckpt_name"] == "sdxl_demo.safetensors"
    assert graph["5"]["inputs"] == {"width": 640, "height": 768, "batch_size": 3}
    ks = graph["3"]["inputs"]
    assert (ks["steps"], ks["cfg"], ks["seed"], ks["sampler_name"], ks["scheduler"]) == (12, 4.5, 99, "dpmpp_2m", "karras")
    assert ks["model"] == ["4", 0] and ks["latent_image"] == ["5", 0]


@pytest.mark.parametrize("prompt", [
    'a "quoted" cat', "}, \"4\": {\"class_type\": \"Evil\"}, {", "line1\nline2\r\n\t", "${prompt} {{prompt}} %s",
    '{"3": {"class_type": "KSampler", "inputs": {}}}', "\\\"\\u0000", "猫 🐱 \u202e",
])
def test_prompts_never_change_the_graph_shape(template, prompt):
    before = copy.deepcopy(template.variants[0].graph)
    params = validate_params(template, {"prompt": prompt, "negativePrompt": prompt}, CHOICES)
    graph = build_graph(template, template.variants[0], params)
    assert template.variants[0].graph == before
    assert set(graph) == set(before)
    for node_id, node in graph.items():
        assert node["class_type"] == before[node_id]["class_type"]
        assert set(node["inputs"]) == set(before[node_id]["inputs"])
    assert graph["6"]["inputs"]["text"] == prompt.strip() or graph["6"]["inputs"]["text"] == prompt
    assert json.loads(json.dumps(graph)) == graph


def _single_graph_file(template) -> dict:
    """The template in the one-graph file form (binds inside the parameters)."""
    variant = template.variants[0]
    parameters = [dict(p, bind=[[b.node, b.input] for b in variant.binds[p["name"]]]) for p in template.parameters]
    return json.loads(json.dumps({"name": "t", "version": 1, "labels": {"zh": "t", "en": "t"},
                                  "graph": variant.graph, "parameters": parameters, "outputs": variant.outputs,
                                  "requires": {"models": ["checkpoints"]}}))


def test_templates_with_bad_bindings_are_refused(template):
    data = _single_graph_file(template)
    parse_template(data)
    broken_node = copy.deepcopy(data)
    broken_node["parameters"][0]["bind"] = [["99", "text"]]
    broken_input = copy.deepcopy(data)
    broken_input["parameters"][0]["bind"] = [["6", "txt"]]
    wrong_type = copy.deepcopy(data)
    wrong_type["parameters"][0]["bind"] = [["3", "steps"]]
    link_target = copy.deepcopy(data)
    link_target["parameters"][0]["bind"] = [["6", "clip"]]
    missing_output = copy.deepcopy(data)
    missing_output["outputs"] = ["42"]
    dangling_link = copy.deepcopy(data)
    dangling_link["graph"]["8"]["inputs"]["vae"] = ["77", 2]
    unbound = copy.deepcopy(data)
    del unbound["parameters"][1]["bind"]
    no_labels = copy.deepcopy(data)
    del no_labels["parameters"][0]["labels"]
    for bad in (broken_node, broken_input, wrong_type, link_target, missing_output, dangling_link, unbound, no_labels):
        with pytest.raises(TemplateError):
            parse_template(bad)


def test_every_shipped_workflow_declares_what_it_needs():
    templates = load_templates()
    assert set(templates) == {"text2img", "img2img", "upscale", "text2img_lora", "flux_text2img"}
    img2img = templates["img2img"].variants[0]
    assert {"LoadImage", "VAEEncode"} <= set(img2img.node_classes) and img2img.model_kinds == ["checkpoints"]
    upscale = templates["upscale"]
    assert [v.name for v in upscale.variants] == ["model", "resize"]
    assert upscale.variant("model").model_kinds == ["upscale_models"] and upscale.variant("resize").model_kinds == []
    nodes = {"LoadImage", "ImageScaleBy", "SaveImage", "UpscaleModelLoader", "ImageUpscaleWithModel"}
    assert upscale.variant_for(nodes, {"upscale_models": ["x4.pth"]}).name == "model"
    assert upscale.variant_for(nodes, {"upscale_models": []}).name == "resize"
    assert upscale.variant_for({"SaveImage"}, {}) is None
    assert "LoraLoader" in templates["text2img_lora"].variants[0].node_classes
    assert "UNETLoader" in templates["flux_text2img"].variants[0].node_classes


def test_a_value_may_feed_several_inputs_and_be_scaled():
    templates = load_templates()
    lora = templates["text2img_lora"]
    params = validate_params(lora, {"prompt": "p", "loraStrength": 0.6}, {**CHOICES, "loras": ["style.safetensors"]})
    graph = build_graph(lora, lora.variants[0], params)
    assert graph["10"]["inputs"]["strength_model"] == graph["10"]["inputs"]["strength_clip"] == 0.6
    assert graph["10"]["inputs"]["lora_name"] == "style.safetensors"
    upscale = templates["upscale"]
    params = validate_params(upscale, {"sourceImage": "upload:abc", "scale": 4}, {"upscale_models": ["x4.pth"]})
    assert build_graph(upscale, upscale.variant("model"), params, {"sourceImage": "in.png"})["4"]["inputs"] == {
        "image": ["3", 0], "upscale_method": "lanczos", "scale_by": 1.0}
    assert build_graph(upscale, upscale.variant("resize"), params)["4"]["inputs"]["scale_by"] == 4
    assert "scale" in errors_of(upscale, {"sourceImage": "upload:abc", "scale": 3}, {})


def test_comfyui_is_asked_for_a_thumbnail_of_each_image_of_a_single_output_workflow(template):
    variant = template.variants[0]
    recorded = build_graph(template, variant, validate_params(template, {"prompt": "p", "batchSize": 2}, CHOICES))
    plain = copy.deepcopy(recorded)
    graph, saving = with_thumbnails(recorded, variant.outputs, 2, set(variant.node_classes) | THUMBNAIL_NODE_CLASSES)
    assert saving == ["thumbnail0", "thumbnail1"]
    assert recorded == plain, "the job records the workflow's own graph"
    assert {key: graph[key] for key in plain} == plain, "the workflow's own nodes are untouched"
    source = plain[variant.outputs[0]]["inputs"]["images"]
    for index, node in enumerate(saving):
        save = graph[node]
        assert save["class_type"] == "SaveAnimatedWEBP" and save["inputs"]["method"] == "fastest"
        assert save["inputs"]["lossless"] is False and save["inputs"]["quality"] == 80
        scale = graph[save["inputs"]["images"][0]]
        assert scale["class_type"] == "ImageScaleToMaxDimension" and scale["inputs"]["largest_size"] == 512
        pick = graph[scale["inputs"]["image"][0]]
        assert pick == {"class_type": "ImageFromBatch", "inputs": {"image": source, "batch_index": index, "length": 1}}
    assert len(graph) == len(plain) + 6


def test_images_within_a_thumbnail_are_saved_as_their_own_thumbnail_without_a_scale(template):
    """ComfyUI's scale node would enlarge a 256×384 image to 512 on its longer side."""
    variant = template.variants[0]
    params = validate_params(template, {"prompt": "p", "width": 256, "height": 384}, CHOICES)
    recorded = build_graph(template, variant, params)
    graph, [saving] = with_thumbnails(recorded, variant.outputs, 1,
                                      set(variant.node_classes) | THUMBNAIL_NODE_CLASSES, params)
    pick = graph[graph[saving]["inputs"]["images"][0]]
    assert pick["class_type"] == "ImageFromBatch" and len(graph) == len(recorded) + 2
    wide = validate_params(template, {"prompt": "p", "width": 520, "height": 256}, CHOICES)
    graph, [saving] = with_thumbnails(build_graph(template, variant, wide), variant.outputs, 1,
                                      set(variant.node_classes) | THUMBNAIL_NODE_CLASSES, wide)
    assert graph[graph[saving]["inputs"]["images"][0]]["class_type"] == "ImageScaleToMaxDimension"


def test_no_thumbnail_nodes_where_comfyui_lacks_them_or_the_images_come_from_two_nodes(template):
    variant = template.variants[0]
    graph = build_graph(template, variant, validate_params(template, {"prompt": "p"}, CHOICES))
    plain = copy.deepcopy(graph)
    lacking = (set(variant.node_classes) | THUMBNAIL_NODE_CLASSES) - {"ImageScaleToMaxDimension"}
    assert with_thumbnails(graph, variant.outputs, 1, lacking) == (plain, [])
    output = variant.outputs[0]
    graph["saved_twice"] = copy.deepcopy(graph[output])
    plain = copy.deepcopy(graph)
    assert with_thumbnails(graph, [output, "saved_twice"], 1,
                           set(variant.node_classes) | THUMBNAIL_NODE_CLASSES) == (plain, [])


FLUX_CHOICES = {"diffusion_models": ["flux_demo.safetensors"],
                "text_encoders": ["clip_l.safetensors", "t5xxl_demo.safetensors"],
                "samplers": ["euler"], "schedulers": ["simple"]}


def test_fluxs_vae_is_the_configured_file_never_a_guess_from_the_catalog():
    store = TemplateStore(defaults=RenderConfig(flux_vae="flux_ae.safetensors").parameter_defaults)
    flux = store.get("flux_text2img")
    chosen = validate_params(flux, {"prompt": "p"}, {**FLUX_CHOICES, "vaes": ["sdxl_vae.safetensors",
                                                                             "flux_ae.safetensors"]})
    assert chosen["vae"] == "flux_ae.safetensors"
    details = errors_of(flux, {"prompt": "p"}, {**FLUX_CHOICES, "vaes": ["ae_other.safetensors"],
                                               "builtin_vaes": ["pixel_space"]})
    assert details == {"vae": ["Not available: 'flux_ae.safetensors'."]}, "no other file, no built-in option"
    named = validate_params(flux, {"prompt": "p", "vae": "ae_other.safetensors"},
                            {**FLUX_CHOICES, "vaes": ["ae_other.safetensors"]})
    assert named["vae"] == "ae_other.safetensors", "a user may still name a VAE file"
    with pytest.raises(TemplateError):
        flux.with_defaults({"nope": 1})


def test_pixel_cap_holds_even_within_each_bound(template):
    details = errors_of(template, {"prompt": "a", "size": "2048x2048"})
    assert "exceeds" in details["size"][0]
    assert validate_params(template, {"prompt": "a", "size": "1536x1024"}, CHOICES)["width"] == 1536


def test_templates_reload_when_files_change_and_a_broken_edit_keeps_the_last_good_one(tmp_path, monkeypatch):
    monkeypatch.setattr(workflows, "RELOAD_CHECK_SECONDS", 0.0)
    source = workflows.WORKFLOWS_DIR / "text2img.json"
    target = tmp_path / "text2img.json"
    target.write_text(source.read_text())
    store = TemplateStore(tmp_path)
    assert store.get("text2img").version == 2
    data = json.loads(source.read_text())
    data["version"] = 3
    target.write_text(json.dumps(data))
    os.utime(target, (time.time() + 5, time.time() + 5))
    assert store.get("text2img").version == 3
    target.write_text("{ not json")
    os.utime(target, (time.time() + 10, time.time() + 10))
    assert store.get("text2img").version == 3, "a broken edit leaves the last good version in service"
    (tmp_path / "extra.json").write_text(json.dumps(dict(data, name="extra")))
    assert set(store.all()) == {"text2img", "extra"}
