"""A simulator of llama.cpp's loader and quantizer: what a model will cost before it is run.

``layout``    the per-layer structure (full attention, sliding window, recurrent) of a model
``memory``    the buffers llama.cpp allocates: weights, KV cache, recurrent state, output,
              compute (replaying its allocator over the worst-case graph)
``quantize``  the per-tensor types and file size llama-quantize would write
``budget``    sizes, plans for the CLI, and quants ranked against a memory budget
``loadlog``   the buffers llama.cpp actually logged at load, to check the simulation against
"""
