package com.srdeploy.sample

import android.content.res.AssetManager
import android.graphics.Bitmap

/** srdeploy's upscaler (the native library built from cpp/ and jni_bridge.cpp): the tiles, the gate and the colour
 * are its own; the graphs run on ncnn (the model in assets/model) or through an [ExecuTorchRunner]. */
class Upscaler private constructor(assets: AssetManager, vulkan: Boolean, private val executorch: ExecuTorchRunner?) {
    /** On ncnn: Vulkan when the phone has it (and [vulkan] asks for it), ncnn's CPU path otherwise. */
    constructor(assets: AssetManager, vulkan: Boolean = true) : this(assets, vulkan, null)

    /** On the phone's CPU with the bundle's ExecuTorch program (assets/executorch, XNNPACK), run by [executorch]. */
    constructor(assets: AssetManager, executorch: ExecuTorchRunner) : this(assets, false, executorch)

    init {
        System.loadLibrary("srdeploy")
        val error = if (executorch == null) load(assets, vulkan) else loadExecuTorch(assets, executorch)
        error?.let { throw IllegalStateException("cannot load the model: $it") }
    }

    /** The output is [scale] times the input in each direction. */
    val scale: Int get() = scale()

    /** Whether the model runs on the GPU (Vulkan). */
    val onVulkan: Boolean get() = executorch == null && onVulkan()

    /** Where the graphs run, in words. */
    val runsOn: String get() = if (executorch != null) "CPU, ExecuTorch" else if (onVulkan) "Vulkan, ncnn" else "CPU, ncnn"

    /** [input] upscaled, in tiles of [tile] input pixels (0: the whole image at once); the same pixels either way. */
    fun upscale(input: Bitmap, tile: Int = 256): Bitmap {
        val argb = if (input.config == Bitmap.Config.ARGB_8888) input else input.copy(Bitmap.Config.ARGB_8888, false)
        val output = Bitmap.createBitmap(argb.width * scale, argb.height * scale, Bitmap.Config.ARGB_8888)
        check(upscale(argb, output, tile)) { "the native upscaler refused the bitmap" }  // or ExecuTorch threw
        return output
    }

    private external fun load(assets: AssetManager, vulkan: Boolean): String?
    private external fun loadExecuTorch(assets: AssetManager, executorch: ExecuTorchRunner): String?
    private external fun scale(): Int
    private external fun onVulkan(): Boolean
    private external fun upscale(input: Bitmap, output: Bitmap, tile: Int): Boolean
}
