package com.srdeploy.sample

import android.content.Context
import java.io.File
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/** The bundle's ExecuTorch program (assets/executorch/model.pte, lowered to XNNPACK) for the phone's CPU: the native
 * upscaler calls [run] for each tile of each graph. ExecuTorch loads programs from files, so the asset is copied out
 * of the APK first. */
class ExecuTorchRunner(context: Context) {
    private val module: Module = Module.load(copied(context, "executorch/model.pte").absolutePath)

    /** One graph ("model": the program's forward method; DSRNet: its gate parts) on a 1×[channels]×[height]×[width]
     * image, channel after channel; the output's floats. */
    fun run(graph: String, input: FloatArray, channels: Int, height: Int, width: Int): FloatArray {
        val shape = longArrayOf(1, channels.toLong(), height.toLong(), width.toLong())
        val method = if (graph == "model") "forward" else graph
        return module.execute(method, EValue.from(Tensor.fromBlob(input, shape)))[0].toTensor().dataAsFloatArray
    }

    companion object {
        /** Whether the bundle holds an ExecuTorch program. */
        fun inBundle(context: Context): Boolean = context.assets.list("executorch")?.contains("model.pte") == true

        private fun copied(context: Context, asset: String): File =
            File(context.filesDir, asset.replace('/', '_')).also { file ->
                context.assets.open(asset).use { input -> file.outputStream().use { input.copyTo(it) } }
            }
    }
}
