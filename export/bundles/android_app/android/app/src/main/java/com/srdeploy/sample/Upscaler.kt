package com.srdeploy.sample

import android.content.res.AssetManager
import android.graphics.Bitmap

/** srdeploy's upscaler on ncnn (the native library built from cpp/ and jni_bridge.cpp): the model in assets/model,
 * Vulkan when the phone has it (and [vulkan] asks for it), ncnn's CPU path otherwise. */
class Upscaler(assets: AssetManager, vulkan: Boolean = true) {
    init {
        System.loadLibrary("srdeploy")
        load(assets, vulkan)?.let { throw IllegalStateException("cannot load the model: $it") }
    }

    /** The output is [scale] times the input in each direction. */
    val scale: Int get() = scale()

    /** Whether the model runs on the GPU (Vulkan). */
    val onVulkan: Boolean get() = onVulkan()

    /** [input] upscaled, in tiles of [tile] input pixels (0: the whole image at once); the same pixels either way. */
    fun upscale(input: Bitmap, tile: Int = 256): Bitmap {
        val argb = if (input.config == Bitmap.Config.ARGB_8888) input else input.copy(Bitmap.Config.ARGB_8888, false)
        val output = Bitmap.createBitmap(argb.width * scale, argb.height * scale, Bitmap.Config.ARGB_8888)
        check(upscale(argb, output, tile)) { "the native upscaler refused the bitmap" }
        return output
    }

    private external fun load(assets: AssetManager, vulkan: Boolean): String?
    private external fun scale(): Int
    private external fun onVulkan(): Boolean
    private external fun upscale(input: Bitmap, output: Bitmap, tile: Int): Boolean
}
